"""Plug-ins that fail do not escape: a method's exception is its error result, a generator's
failure and a dying worker stop the run with one line, a process that vanished reads as
interrupted.

The plug-ins are a small module written to a temporary folder and put on ``sys.path`` (in
this process) or on ``PYTHONPATH`` (in a subprocess, where the process must die).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.run.storage import read_table

ROOT = Path(__file__).resolve().parent.parent
MODULE = "failing_plugins"

PLUGINS = '''
import os
import sys
import time

import numpy as np

from micromacro_sim.core.results import BatchScores
from micromacro_sim.estimators import Estimator, Scores, TwoStepEstimator
from micromacro_sim.options import Option

RAISED = {
    "KeyError": lambda: KeyError("no such column"),
    "RuntimeError": lambda: RuntimeError("solver state lost\\nsecond line"),
    "AssertionError": lambda: AssertionError("shapes differ"),
    "custom": lambda: Oops("my own failure"),
    "ValueError": lambda: ValueError("singular"),
}


class Oops(Exception):
    """A plug-in's own exception type."""


def means(data):
    return np.asarray([data.x[a:a + n, 0].mean()
                       for a, n in zip(data.starts, data.sizes)])[:, None]


class Raises(TwoStepEstimator):
    """Group means, except that replications with y[0] > 0 raise (or call sys.exit)."""

    name = "raises"
    options = {"what": Option("KeyError", "str", "what to raise",
                              choices=(*RAISED, "exit"))}

    def scores(self, data):
        if data.y[0] > 0:
            if self.params["what"] == "exit":
                sys.exit(0)
            raise RAISED[self.params["what"]]()
        return Scores(values=means(data))


class BatchRaises(TwoStepEstimator):
    """A batch path that raises for the whole batch."""

    name = "batch_raises"
    batch_designs = ("balanced",)

    def scores(self, data):
        return Scores(values=means(data))

    def scores_batch(self, batch):
        raise RuntimeError("batch broke")


class FallbackRaises(Raises):
    """A batch path that leaves every replication to scores(), which raises on some."""

    name = "fallback_raises"
    batch_designs = ("balanced",)

    def scores_batch(self, batch):
        values = np.zeros((batch.n_reps, batch.datasets[0].n_groups))
        return BatchScores.ok(values, fallback=np.ones(batch.n_reps, bool))


class OwnBatch(Estimator):
    """Overrides fit_batch itself, and returns nothing."""

    name = "own_batch"

    def _fit(self, data):
        raise NotImplementedError

    def fit_batch(self, batch, engine="auto"):
        return None


class Interrupts(TwoStepEstimator):
    """Ctrl-C while it fits."""

    name = "interrupts"

    def scores(self, data):
        raise KeyboardInterrupt


class DiesInWorker(TwoStepEstimator):
    """Slow in the run's own process (so the run hands the rest to workers); in a worker,
    the process ends itself on the scenario with 21 groups."""

    name = "dies_in_worker"

    def scores(self, data):
        if os.environ.get("MM_TEST_MAIN") == str(os.getpid()):
            time.sleep(0.2)
        elif data.n_groups == 21:
            time.sleep(1.5)  # the other worker's tasks end first: this task alone is running
            os._exit(3)
        return Scores(values=means(data))


class Vanishes(TwoStepEstimator):
    """Ends its process where it stands: nothing can record it."""

    name = "vanishes"

    def scores(self, data):
        os._exit(0)


def bad_gen(scenario, rng):
    raise RuntimeError("generator broke\\nsecond line")


def exit_gen(scenario, rng):
    sys.exit(0)


def none_gen(scenario, rng):
    return None
'''

BASE = {"name": "failing", "seed": 5, "replications": 8,
        "admissibility": {"policy": "flag", "gate": "none"},
        "fixed": {"n_groups": 20, "group_size": 5, "icc": 0.2, "r_zxi": 0.3}}

#: label -> (method options, expected reason code, expected reason on failing replications)
RAISING = {
    "key": ({"what": "KeyError"}, "method_raised", "error: KeyError: 'no such column'"),
    "runtime": ({"what": "RuntimeError"}, "method_raised",
                "error: RuntimeError: solver state lost"),
    "assertion": ({"what": "AssertionError"}, "method_raised",
                  "error: AssertionError: shapes differ"),
    "custom": ({"what": "custom"}, "method_raised", "error: Oops: my own failure"),
    "exits": ({"what": "exit"}, "method_raised", "error: called sys.exit(0)"),
    "numeric": ({"what": "ValueError"}, "numerical_error", "error: ValueError: singular"),
}


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    where = tmp_path_factory.mktemp("plugins")
    (where / f"{MODULE}.py").write_text(PLUGINS)
    (where / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    return where


@contextlib.contextmanager
def _on_path(folder: Path):
    """``folder`` on sys.path (in this process), its modules forgotten before and after."""
    def forget():
        for name in (MODULE, "exits_on_import"):
            sys.modules.pop(name, None)

    forget()
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        forget()


def _run(cfg: dict, folder: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    with _on_path(folder):
        rc = main(["run", str(path), "--output", str(out), "--quiet", *extra])
    return rc, capsys.readouterr().err


def _subprocess(args: list[str], folder: Path, main_pid_env: bool = False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    code = ("import os, sys\n"
            + ("os.environ['MM_TEST_MAIN'] = str(os.getpid())\n" if main_pid_env else "")
            + "from micromacro_sim.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _status(out: Path) -> str:
    return json.loads((out / "manifest.json").read_text())["status"]


def test_a_method_that_raises_is_its_error_result_and_the_others_carry_on(
        plugins, tmp_path, capsys):
    methods = ["unadjusted",
               *({label: {"method": f"{MODULE}:Raises", **opts}}
                 for label, (opts, _, _) in RAISING.items()),
               {"batch": {"method": f"{MODULE}:BatchRaises"}},
               {"fallback": {"method": f"{MODULE}:FallbackRaises"}},
               {"own": {"method": f"{MODULE}:OwnBatch"}}]
    rc, err = _run({**BASE, "methods": methods}, plugins, tmp_path / "run", capsys,
                   "--backend", "sequential")
    assert rc == 0, err
    assert _status(tmp_path / "run") == "complete"
    est = read_table(tmp_path / "run", "estimates")
    one = est[est.term_index == 0].set_index(["method", "replication"]).sort_index()
    y_positive = one.loc["key", "status"] == "error"  # the replications the plug-ins refuse
    assert 0 < y_positive.sum() < BASE["replications"]
    for label, (_, code, reason) in [*RAISING.items(),
                                     ("fallback", ("", "method_raised",
                                                   "error: KeyError: 'no such column'"))]:
        rows = one.loc[label]
        failed = rows[y_positive.to_numpy()]
        assert (failed.status == "error").all() and (failed.reason_code == code).all(), label
        assert (failed.reason == reason).all(), (label, failed.reason.iloc[0])
        assert failed.estimate.isna().all() and not failed.admissible.any()
        assert (rows[~y_positive.to_numpy()].status == "ok").all(), label
    batch, own = one.loc["batch"], one.loc["own"]
    assert (batch.reason == "error: RuntimeError: batch broke").all()
    assert (batch.engine == "fast").all() and (batch.status == "error").all()
    assert own.reason.str.startswith("error: TypeError: fit_batch returned NoneType").all()
    assert (own.reason_code == "method_raised").all()
    # the method that does not fail gives the bits of a run without the failing ones
    rc, err = _run({**BASE, "methods": ["unadjusted"]}, plugins, tmp_path / "alone", capsys,
                   "--backend", "sequential")
    assert rc == 0, err
    alone = read_table(tmp_path / "alone", "estimates")
    mine = est[est.method == "unadjusted"].reset_index(drop=True)
    assert np.array_equal(mine.estimate.to_numpy(), alone.estimate.to_numpy())
    assert (mine.status == "ok").all()


def test_ctrl_c_in_a_plugin_still_interrupts(plugins, tmp_path, capsys):
    # SystemExit is recorded (above) but KeyboardInterrupt is not: the run stops
    rc, err = _run({**BASE, "methods": ["unadjusted", f"{MODULE}:Raises",
                                        f"{MODULE}:Interrupts"]},
                   plugins, tmp_path / "run", capsys, "--backend", "sequential")
    assert rc == 130 and err.startswith("interrupted:")
    assert _status(tmp_path / "run") == "interrupted"


@pytest.mark.parametrize(("generator", "says"), [
    ("bad_gen", "raised RuntimeError: generator broke (scenario "),
    ("exit_gen", "called sys.exit(0) (scenario "),
    ("none_gen", "returned NoneType, not a Dataset (scenario "),
])
def test_a_failing_generator_stops_the_run_in_one_line(plugins, tmp_path, capsys, generator,
                                                       says):
    cfg = {**BASE, "methods": ["unadjusted"], "generator": f"{MODULE}:{generator}"}
    rc, err = _run(cfg, plugins, tmp_path / "run", capsys, "--backend", "sequential")
    assert rc == 2
    assert err.startswith(f"error: generator: '{MODULE}:{generator}' {says}"), err
    assert err.count("\n") == 1 and err.rstrip().endswith("replication 0)")
    assert _status(tmp_path / "run") == "failed"


def test_a_plugin_module_that_exits_on_import_is_one_line(plugins, tmp_path, capsys):
    rc, err = _run({**BASE, "methods": ["exits_on_import:Thing"]}, plugins, tmp_path / "run",
                   capsys)
    assert rc == 2
    assert err == ("error: methods: cannot import 'exits_on_import' for "
                   "'exits_on_import:Thing' (called sys.exit(0))\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["loky", "processes"])
def test_a_dying_worker_ends_the_run_naming_its_task(plugins, tmp_path, backend):
    cfg = {**BASE, "replications": 20, "chunk_size": 20, "n_jobs": 2, "backend": backend,
           "methods": ["unadjusted", {"die": {"method": f"{MODULE}:DiesInWorker"}}],
           "fixed": {k: v for k, v in BASE["fixed"].items() if k != "n_groups"},
           "grid": {"n_groups": [20, 21, 22]}}
    path, out = tmp_path / "die.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(cfg))
    res = _subprocess(["run", str(path), "--output", str(out), "--quiet"], plugins,
                      main_pid_env=True)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: backend: a worker process died")
    with _on_path(plugins):
        from micromacro_sim.run.configure import load_config

        dying = load_config(path).scenarios[1]
    assert dying.n_groups == 21
    # the dying task is named (with a companion still running on a slow machine, both are
    # named as the candidates: "while running A or B (methods: ...)")
    assert f"while running scenario {dying.key} replications 0-19" in lines[0] \
        or f"or scenario {dying.key} replications 0-19" in lines[0]
    assert lines[0].count("scenario ") <= 2
    assert f"(methods: unadjusted, die={MODULE}:DiesInWorker)" in lines[0]
    assert "EXIT(3)" in lines[0]
    assert _status(out) == "failed"
    # the replications run before (here: the probes of the first scenario) are kept
    assert set(read_table(out, "estimates").replication) >= {0, 1, 2}


def test_a_run_whose_process_vanished_reads_as_interrupted(plugins, tmp_path, capsys):
    cfg = {**BASE, "methods": ["unadjusted", f"{MODULE}:Vanishes"]}
    path, out = tmp_path / "gone.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(cfg))
    res = _subprocess(["run", str(path), "--output", str(out), "--quiet", "--backend",
                       "sequential"], plugins)
    assert res.returncode == 0 and res.stderr == ""  # os._exit(0): nothing can say more
    assert _status(out) == "running"
    pid = json.loads((out / ".lock").read_text())["pid"]
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("failing: interrupted; 0 of 8 replications")
    assert text[1].startswith(f"interrupted: whole run (pid {pid} on ")
    assert text[1].endswith("is no longer running and recorded no end (killed, or its "
                            "process was ended by code it ran); run again to resume")

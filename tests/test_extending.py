"""docs/extending.md run word for word: plug-ins outside the package.

The files of the walkthrough are written to a temporary folder, which a subprocess gets on
PYTHONPATH; ``micromacro check-method`` and ``micromacro run`` then use them as a user would.
The entry-point route is tested with the distribution metadata an installer writes (a
``.dist-info`` folder with ``entry_points.txt``), and with a real ``pip install`` in a
virtual environment where pip can build wheels (slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.run.storage import read_table

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "extending.md").read_text()
FILES = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", DOC, re.S))


def _cli(args, cwd, pythonpath, python=sys.executable):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), str(ROOT)])}
    return subprocess.run([python, "-m", "micromacro_sim.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@contextlib.contextmanager
def _on_path(folder: Path):
    """``folder`` on sys.path (in this process), plug-in caches reset before and after."""
    import micromacro_sim.estimators as est_pkg
    from micromacro_sim.estimators import plugins

    def reset():
        for name in ("my_methods", "my_generator", "broken", "my_onestep", "half"):
            sys.modules.pop(name, None)
        est_pkg._REGISTRY = None
        plugins.entry_points.cache_clear()
        plugins._distributions.cache_clear()

    reset()
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        reset()


def _main(args, folder, capsys):
    with _on_path(folder):
        rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    where = tmp_path_factory.mktemp("study")
    for name, body in FILES.items():
        (where / name).write_text(body)
    return where


def test_the_walkthrough_has_its_files():
    assert {"my_methods.py", "my_generator.py", "my_study.yaml", "pyproject.toml"} <= set(FILES)
    assert "micromacro check-method my_methods:TrimmedMeans" in DOC


def test_check_method_passes_on_the_example(study, capsys):
    rc, out, err = _main(["check-method", "my_methods:TrimmedMeans"], study, capsys)
    assert rc == 0, err
    lines = out.splitlines()
    # a two-step plug-in gets the option se: jackknife, and the contract checks it
    assert {"constructor", "fits_row16", "unbalanced", "never_raises", "jackknife"} <= {
        ln.split()[0] for ln in lines[1:-1]}
    assert lines[-1] == "5 passed, 0 failed"


def test_a_one_step_method_needs_only_estimate(study, tmp_path, capsys):
    rc, out, err = _main(["check-method", "my_onestep:MeansOLS"], study, capsys)
    assert rc == 0, out + err
    from micromacro_sim.estimators import registry

    assert [n for n, c in registry().items() if c.missing_methods()] == []
    (tmp_path / "half.py").write_text(
        "from micromacro_sim.estimators import Estimator, TwoStepEstimator\n"
        "class Half(Estimator):\n    name = 'half'\n"
        "class NoScores(TwoStepEstimator):\n    name = 'no_scores'\n")
    cfg = {**yaml.safe_load(FILES["my_study.yaml"]), "generator": None}
    for ref, missing in (("half:Half", "estimate()"), ("half:NoScores", "scores()")):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**cfg, "methods": [ref]}))
        with _on_path(tmp_path):
            rc = main(["run", str(tmp_path / "c.yaml"), "--output", str(tmp_path / "o"),
                       "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and err == (f"error: methods: {ref!r} is not a complete Estimator: it "
                                   f"must define {missing}\n"), err


def test_check_method_names_the_design_term_and_cause(tmp_path, capsys):
    (tmp_path / "half.py").write_text(
        "import numpy as np\n"
        "from micromacro_sim.estimators import Estimator, FitResult\n"
        "class NoDf(Estimator):\n"
        "    name = 'no_df'\n"
        "    def estimate(self, data):\n"
        "        X = data.design(data.xbar)\n"
        "        beta = np.linalg.lstsq(X, data.y, rcond=None)[0]\n"
        "        df = data.n_groups - X.shape[1]\n"
        "        r = data.y - X @ beta\n"
        "        with np.errstate(all='ignore'):\n"
        "            v = np.abs(np.diag((r @ r / df) * np.linalg.pinv(X.T @ X)))\n"
        "        return FitResult(method=self.label, terms=data.terms, params=beta,\n"
        "                         bse={'classical': np.sqrt(v)}, df_resid=float(df))\n")
    rc, out, _ = _main(["check-method", "half:NoDf"], tmp_path, capsys)
    assert rc == 1
    line = next(ln for ln in out.splitlines() if "never_raises" in ln)
    assert "FAIL  edge design n_groups=3, group_size=3" in line and "(seed 0)" in line
    assert "SEs <= 0 or NaN (term intercept, z, xi: inf)" in line


def test_check_method_fails_a_broken_method(study, tmp_path, capsys):
    (tmp_path / "broken.py").write_text(
        "from micromacro_sim.estimators import TwoStepEstimator\n"
        "class Broken(TwoStepEstimator):\n"
        "    name = 'broken'\n"
        "    description = 'raises'\n"
        "    def scores(self, data):\n"
        "        raise KeyError('no scores')\n")
    rc, out, _ = _main(["check-method", "broken:Broken"], tmp_path, capsys)
    assert rc == 1
    assert "FAIL" in out and "KeyError" in out


def test_run_uses_the_plugins_and_a_changed_plugin_refuses_to_mix(study, tmp_path, capsys):
    out = tmp_path / "run"
    res = _cli(["run", "my_study.yaml", "--output", str(out), "--quiet"], study, study)
    assert res.returncode == 0, res.stderr
    est = read_table(out, "estimates")
    assert set(est["method"]) == {"unadjusted", "croon", "trimmed"}
    assert (est.loc[est["method"] == "trimmed", "status"] == "ok").all()
    manifest = json.loads((out / "manifest.json").read_text())
    plugins = manifest["result_identity"]["plugins"]
    assert set(plugins) == {"my_methods:TrimmedMeans", "generator=my_generator:t_errors"}
    assert plugins["my_methods:TrimmedMeans"]["version"] == "1.0"
    # the t errors reached the data: y differs from the default generator's
    cfg = yaml.safe_load(FILES["my_study.yaml"])
    cfg.pop("generator")
    (tmp_path / "normal.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = _main(["run", str(tmp_path / "normal.yaml"), "--output",
                        str(tmp_path / "normal"), "--quiet"], study, capsys)
    assert rc == 0, err
    normal = read_table(tmp_path / "normal", "estimates")
    same = normal[normal.method == "unadjusted"]["estimate"].to_numpy()
    assert not (same == est[est.method == "unadjusted"]["estimate"].to_numpy()).all()
    # editing the method's file changes its identity: the old folder refuses it
    edited = tmp_path / "edited"
    edited.mkdir()
    for name, body in FILES.items():
        (edited / name).write_text(body)
    with open(edited / "my_methods.py", "a") as fh:
        fh.write("\n# changed\n")
    rc, _, err = _main(["run", str(edited / "my_study.yaml"), "--output", str(out), "--quiet"],
                       edited, capsys)
    assert rc == 2
    assert err.startswith("error: output:") and "different config" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("methods", ["my_methodz:TrimmedMeans"], "methods: cannot import 'my_methodz'"),
    ("methods", ["my_generator:t_errors"], "methods: 'my_generator:t_errors' is not a subclass"),
    ("generator", "my_generator:t_error", "generator: module 'my_generator' has no 't_error'"),
    ("generator", "nosuch", "generator: expected module:Name or an installed generator"),
])
def test_a_bad_plugin_is_one_line(study, tmp_path, capsys, field, value, message):
    cfg = {**yaml.safe_load(FILES["my_study.yaml"]), field: value}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = _main(["run", str(tmp_path / "bad.yaml"), "--output", str(tmp_path / "out"),
                        "--quiet"], study, capsys)
    assert rc == 2
    assert err.startswith(f"error: {message}"), err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def _entry_point_config(tmp_path: Path) -> Path:
    cfg = {**yaml.safe_load(FILES["my_study.yaml"]), "generator": "t_errors",
           "methods": ["unadjusted", "trimmed_means"], "replications": 6}
    path = tmp_path / "ep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _check_entry_point_run(tmp_path: Path, pythonpath: Path, python: str = sys.executable):
    res = _cli(["methods"], tmp_path, pythonpath, python)
    assert res.returncode == 0 and "trimmed_means" in res.stdout, res.stderr
    res = _cli(["check-method", "trimmed_means"], tmp_path, pythonpath, python)
    assert res.returncode == 0, res.stdout + res.stderr
    res = _cli(["run", str(_entry_point_config(tmp_path)), "--output", str(tmp_path / "ep"),
                "--quiet"], tmp_path, pythonpath, python)
    assert res.returncode == 0, res.stderr
    return _check_entry_point_folder(tmp_path)


def _check_entry_point_folder(tmp_path: Path):
    est = read_table(tmp_path / "ep", "estimates")
    assert set(est["method"]) == {"unadjusted", "trimmed_means"}
    ident = json.loads((tmp_path / "ep" / "manifest.json").read_text())["result_identity"]
    assert ident["plugins"]["trimmed_means"]["distribution"] == "1.0"
    return est


def test_entry_points_of_an_installed_distribution(study, tmp_path, capsys):
    site = tmp_path / "site"
    info = site / "my_micromacro_plugins-1.0.dist-info"
    info.mkdir(parents=True)
    for name in ("my_methods.py", "my_generator.py"):
        (site / name).write_text(FILES[name])
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-micromacro-plugins\n"
                                   "Version: 1.0\n")
    (info / "top_level.txt").write_text("my_generator\nmy_methods\n")
    (info / "RECORD").write_text("")
    toml = FILES["pyproject.toml"]
    eps = "".join(f"[{g}]\n{body.strip().replace(chr(34), '')}\n\n" for g, body in re.findall(
        r'\[project\.entry-points\."([^"]+)"\]\n(.*?)(?=\n\[|\Z)', toml, re.S))
    (info / "entry_points.txt").write_text(eps)
    rc, out, err = _main(["methods"], site, capsys)
    assert rc == 0 and "trimmed_means" in out, err
    rc, out, err = _main(["check-method", "trimmed_means"], site, capsys)
    assert rc == 0, out + err
    rc, _, err = _main(["run", str(_entry_point_config(tmp_path)), "--output",
                        str(tmp_path / "ep"), "--quiet"], site, capsys)
    assert rc == 0, err
    est = _check_entry_point_folder(tmp_path)
    # the same study by module:Name gives the same numbers
    cfg = {**yaml.safe_load(_entry_point_config(tmp_path).read_text()),
           "generator": "my_generator:t_errors",
           "methods": ["unadjusted", {"trimmed_means": {"method": "my_methods:TrimmedMeans"}}]}
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = _main(["run", str(tmp_path / "ref.yaml"), "--output", str(tmp_path / "ref"),
                        "--quiet"], site, capsys)
    assert rc == 0, err
    pd.testing.assert_frame_equal(est, read_table(tmp_path / "ref", "estimates"))


def _can_build_wheels() -> bool:
    try:
        import wheel  # noqa: F401
    except ImportError:
        import setuptools

        return tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (70, 1)
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _can_build_wheels(), reason="pip cannot build wheels offline here")
def test_pip_install_into_a_virtual_environment(study, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", str(study)], check=True, timeout=300)
    _check_entry_point_run(tmp_path, tmp_path / "nothing", python)

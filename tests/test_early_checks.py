"""Bad command-line and config input is refused before any work, in one line, status 2.

Summary options of ``run --summarize`` are checked against the config before the run;
``plan`` and ``power`` check their targets and output paths before the pilot or the
search; usage errors are one line naming the command and the option; method specs of
the wrong shape and counts beyond their bounds are refused with the config.
"""

from __future__ import annotations

import pytest

from micromacro_sim.cli.main import main

CONFIG = """\
name: t
seed: 1
replications: 2
methods: [unadjusted]
admissibility: {policy: flag, gate: none}
fixed: {n_groups: 10, group_size: 4, r_zxi: 0.3, icc: 0.2}
"""


def _config(tmp_path, old=None, new=None):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG if old is None else CONFIG.replace(old, new))
    return path


def _one_line(capsys, start):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(start), err
    assert "Traceback" not in captured.out + captured.err
    return err


def _refuses(tmp_path, capsys, argv, start):
    """``micromacro ARGV`` exits 2 with one stderr line and leaves only the config."""
    before = sorted(tmp_path.iterdir())
    assert main(argv) == 2
    err = _one_line(capsys, start)
    assert sorted(tmp_path.iterdir()) == before
    return err


# ---------------------------------------------------------------- run --summarize
@pytest.mark.parametrize("options, fixed, start", [
    (["--methods", "unadjusted,nosuch"], ["--methods", "unadjusted"],
     "error: methods: unknown method 'nosuch' in this run (available: unadjusted)"),
    (["--terms", "eta"], ["--terms", "xi"],
     "error: terms: unknown term 'eta' in this run (available: intercept, z, xi)"),
    (["--measures", "bias,biass"], ["--measures", "bias"],
     "error: measures: unknown measure 'biass' (known: k, "),
    (["--style", "mplus", "--focal", "eta"], ["--style", "mplus", "--focal", "z"],
     "error: focal: unknown term 'eta' (available: intercept, z, xi)"),
])
def test_run_summarize_options_are_checked_before_the_run(tmp_path, capsys, options, fixed,
                                                          start):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    argv = ["run", str(cfg), "--output", str(out), "--quiet", "--summarize"]
    _refuses(tmp_path, capsys, [*argv, *options], start)
    assert main([*argv, *fixed]) == 0  # the corrected option runs and summarizes
    assert (out / "manifest.json").exists()
    assert "unadjusted" in capsys.readouterr().out


# ---------------------------------------------------------------- usage errors
@pytest.mark.parametrize("argv, line", [
    (["run", "{cfg}", "--foo"],
     "micromacro run: unrecognized arguments: --foo (see micromacro run --help)"),
    (["run"], "micromacro run: the following arguments are required: config "
              "(see micromacro run --help)"),
    (["run", "{cfg}", "--style", "fancy"],
     "micromacro run: argument --style: invalid choice: 'fancy' (choose from 'table', "
     "'mplus') (see micromacro run --help)"),
    (["run", "{cfg}", "--n-jobs", "two"],
     "micromacro run: argument --n-jobs: invalid int value: 'two' (see micromacro run --help)"),
    (["plan", "{cfg}", "--pilot"],
     "micromacro plan: argument --pilot: expected one argument (see micromacro plan --help)"),
    (["frobnicate"], "micromacro: argument command: invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, argv, line):
    cfg = _config(tmp_path)
    argv = [a.replace("{cfg}", str(cfg)) for a in argv]
    err = _refuses(tmp_path, capsys, argv, line)
    assert err.endswith("--help)")


def test_help_keeps_the_full_text(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: micromacro run")
    assert len(out.splitlines()) > 20 and "--summarize" in out


# ---------------------------------------------------------------- plan and power
@pytest.fixture
def no_pilot(monkeypatch):
    """Fail if a plan's pilot simulation starts."""
    from micromacro_sim.planning import plan

    def pilot(*args, **kwargs):
        raise AssertionError("the pilot ran before the input was checked")

    monkeypatch.setattr(plan, "pilot_estimates", pilot)


@pytest.mark.parametrize("target", ["bias=1e-300", "empse=1e-13", "cover=1e-200"])
def test_plan_refuses_a_target_too_small(tmp_path, capsys, no_pilot, target):
    cfg = _config(tmp_path)
    err = _refuses(tmp_path, capsys, ["plan", str(cfg), "--target-mcse", target,
                                      "--output", str(tmp_path / "plan.csv")],
                   f"error: target-mcse: {target.split('=')[0]}='{target.split('=')[1]}': "
                   "expected at least 1e-12")
    assert "replications" in err


@pytest.mark.parametrize("where, start", [
    ("missing/plan.csv", "error: output: '{tmp}/missing/plan.csv' cannot be written"),
    ("", "error: output: '{tmp}' is an existing folder, not a file"),
])
def test_plan_checks_its_output_before_the_pilot(tmp_path, capsys, no_pilot, where, start):
    cfg = _config(tmp_path)
    out = str(tmp_path / where) if where else str(tmp_path)
    _refuses(tmp_path, capsys, ["plan", str(cfg), "--output", out],
             start.replace("{tmp}", str(tmp_path)))


def test_power_checks_its_output_before_the_search(tmp_path, capsys, monkeypatch):
    from micromacro_sim.planning import power

    def search(*args, **kwargs):
        raise AssertionError("the search ran before the output was checked")

    monkeypatch.setattr(power, "solve_power", search)
    cfg = _config(tmp_path)
    _refuses(tmp_path, capsys, ["power", str(cfg), "--solve", "n_groups", "--output",
                                str(tmp_path)],
             f"error: output: '{tmp_path}' is an existing folder, not a file")
    (tmp_path / "fig").mkdir()
    _refuses(tmp_path, capsys, ["power", str(cfg), "--solve", "n_groups", "--figure",
                                str(tmp_path / "fig")],
             f"error: figure: '{tmp_path / 'fig'}' is an existing folder, not a file")


# ---------------------------------------------------------------- config shapes and bounds
@pytest.mark.parametrize("methods, start", [
    ("[{b: {method: [blup]}}]", "error: methods.b.method: expected a method name, got ['blup']"),
    ("[{b: {method: {x: 1}}}]", "error: methods.b.method: expected a method name, got {'x': 1}"),
    ("[{b: {method: blup, 1: 2, reml: false}}]",
     "error: methods.b: option names are words, got 1"),
])
def test_method_specs_of_the_wrong_shape_are_one_line(tmp_path, capsys, methods, start):
    cfg = _config(tmp_path, "methods: [unadjusted]", f"methods: {methods}")
    _refuses(tmp_path, capsys, ["run", str(cfg), "--output", str(tmp_path / "out"), "--quiet"],
             start)


def test_method_true_given_as_a_yaml_boolean_is_the_true_method(tmp_path, capsys):
    cfg = _config(tmp_path, "methods: [unadjusted]", "methods: [{t: {method: true}}]")
    assert main(["grid", str(cfg)]) == 0
    from micromacro_sim.run.configure import load_config

    assert load_config(cfg).methods[0].method == "true"


@pytest.mark.parametrize("old, new, start", [
    ("icc: 0.2}", "icc: 0.2, categories: 101}",
     "error: categories: expected an integer in [2, 100], got 101"),
    ("group_size: 4", "group_size: 1:5", "error: fixed.group_size: 1:5 is a base-60 number"),
    ("seed: 1", "seed: 1e3", "error: seed: expected a non-negative integer, got 1000.0 "
                             "(write 1000: "),
])
def test_config_values_refused_before_anything_is_written(tmp_path, capsys, old, new, start):
    cfg = _config(tmp_path, old, new)
    _refuses(tmp_path, capsys, ["run", str(cfg), "--output", str(tmp_path / "out"), "--quiet"],
             start)

"""``micromacro bench`` states each target's cold and warm verdicts from the run's own figures."""

from __future__ import annotations

from micromacro_sim.cli.bench import TARGETS, print_targets, target_rows

FIGURES = {
    "clark_row16_seconds_cold": 1.3, "clark_row16_seconds_warm": 1.2,
    "cv2007_all_seconds_cold": 9.0, "cv2007_all_seconds_warm": 10.01,
    "cv2007_all_peak_mib_cold": 507.0, "cv2007_all_peak_mib_warm": 601.0,
    "r_ratio_cold": 499.0, "r_ratio_warm": 500.0,
    "bayes_row16_seconds_cold": 61.0, "bayes_row16_seconds_warm": 30.0,
}


def test_the_r_ratio_target_is_500x():
    assert [(op, bound) for key, op, bound, _ in TARGETS if key == "r_ratio"] == [(">=", 500.0)]


def test_verdicts_follow_the_figures(capsys):
    verdicts = print_targets(FIGURES)
    assert verdicts == {
        "clark_row16_seconds": {"cold": False, "warm": True},
        "cv2007_all_seconds": {"cold": True, "warm": False},
        "cv2007_all_peak_mib": {"cold": True, "warm": False},
        "r_ratio": {"cold": False, "warm": True},
        "bayes_row16_seconds": {"cold": False, "warm": True},
    }
    text = capsys.readouterr().out
    assert text.count("NOT MET") == 5 and text.count(": met") == 5
    assert "cold 1.3: NOT MET; warm 1.2: met" in text


def test_a_missing_figure_is_not_a_verdict(capsys):
    verdicts = print_targets({"r_ratio_cold": 600.0, "r_ratio_warm": 400.0})
    assert verdicts["r_ratio"] == {"cold": True, "warm": False}
    others = [verdicts[k] for k, *_ in TARGETS if k != "r_ratio"]
    assert others == [{"cold": None, "warm": None}] * 4
    assert capsys.readouterr().out.count("not measured") == 8


def test_a_missing_cold_figure_is_not_measured(capsys):
    warm_only = {k: v for k, v in FIGURES.items() if k != "cv2007_all_seconds_cold"}
    verdicts = print_targets(warm_only)
    assert verdicts["cv2007_all_seconds"] == {"cold": None, "warm": False}
    line = next(ln for ln in capsys.readouterr().out.splitlines()
                if "cv2007 with every method wall" in ln)
    assert "cold not measured" in line and "warm 10.01: NOT MET" in line


def test_target_rows_carry_both_figures_for_the_report():
    rows = {r["key"]: r for r in target_rows(FIGURES)}
    assert rows["r_ratio"]["cold"] == 499.0 and rows["r_ratio"]["met_cold"] is False
    assert rows["r_ratio"]["warm"] == 500.0 and rows["r_ratio"]["met_warm"] is True


def test_cold_runs_start_without_the_package_bytecode(tmp_path):
    """Cold: this package's bytecode for the running interpreter is deleted, nothing else
    (other interpreters' files and the sources stay)."""
    import sys
    from pathlib import Path

    import micromacro_sim
    from micromacro_sim.cli.bench_timing import drop_package_bytecode

    tag = sys.implementation.cache_tag
    cache = tmp_path / "pkg" / "sub" / "__pycache__"
    cache.mkdir(parents=True)
    mine = [cache / f"mod.{tag}.pyc", cache / f"mod.{tag}.opt-1.pyc"]
    other = cache / "mod.cpython-299.pyc"
    source = tmp_path / "pkg" / "sub" / "mod.py"
    for f in [*mine, other, source]:
        f.write_text("x")
    assert drop_package_bytecode([tmp_path / "pkg"]) == 2
    assert not any(f.exists() for f in mine) and other.exists() and source.exists()
    # by default, the package's own folder
    from micromacro_sim.cli import bench_timing

    assert (Path(micromacro_sim.__file__).resolve().parent
            == Path(bench_timing.__file__).resolve().parents[1])

"""``micromacro bench`` states each target's verdict from the run's own figures."""

from __future__ import annotations

from micromacro_sim.cli.bench import TARGETS, print_targets


def test_verdicts_follow_the_figures(capsys):
    out = {"clark_row16_seconds": 1.2, "cv2007_all_seconds": 10.01,
           "cv2007_all_peak_mib": 507.0, "r_ratio": 207.0}
    verdicts = print_targets(out)
    assert verdicts == {"clark_row16_seconds": True, "cv2007_all_seconds": False,
                        "cv2007_all_peak_mib": True, "r_ratio": False}
    text = capsys.readouterr().out
    assert text.count("NOT MET") == 2 and text.count(": met") == 2


def test_a_missing_figure_is_not_a_verdict(capsys):
    verdicts = print_targets({"r_ratio": 400.0})
    assert verdicts["r_ratio"] is True
    assert [verdicts[k] for k, *_ in TARGETS if k != "r_ratio"] == [None, None, None]
    assert capsys.readouterr().out.count("not measured") == 3

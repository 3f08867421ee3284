"""The Markdown of a bench run: rendered from the figures alone, placed between its markers."""

from __future__ import annotations

import pytest

from micromacro_sim.cli.bench_report import BEGIN, END, render_markdown, replace_block

RUN = {"wall": 6.0, "cpu": 9.5, "peak_mib": 140.2, "runs": 1}
WARM = {"wall": 5.01, "cpu": 8.21, "peak_mib": 133.0, "runs": 3}

FIGURES = {
    "date": "2026-12-01 10:00",
    "quick": False,
    "machine": {"cpu": "Test CPU", "cores": 2, "memory": "24 GiB", "load": 1.0,
                "platform": "Linux", "python": "3.11.7", "numpy": "2.4.6", "blas": ""},
    "cold_definition": "cold = first run, empty bytecode cache; warm = median of the rest",
    "method_tables": [
        {"title": "CV row 16 (G = 100, n = 10, ICC 0.1, r(Z, xi) 0.3)", "n_fast": 1000,
         "n_ref": 20,
         "rows": [{"method": "sem", "reference_ms": 2.6021, "fast_first_ms": 0.5,
                   "fast_ms": 0.07, "speedup": 37.17},
                  {"method": "blup", "reference_ms": 0.543, "fast_first_ms": None,
                   "fast_ms": None, "speedup": None}]},
        {"title": "cv2007, n = 40 (G = 100, n = 40, ICC 0.1, r(Z, xi) 0.3)", "n_fast": 200,
         "n_ref": 5,
         "rows": [{"method": "sem", "reference_ms": 12.0, "fast_first_ms": 2.0,
                   "fast_ms": 1.5, "speedup": 8.0}]},
    ],
    "cli": [{"key": "clark_row16", "run": "clark2020 row 16", "cold": RUN, "warm": WARM},
            {"key": "cv2007", "run": "cv2007, 5 methods", "cold": None, "warm": RUN}],
    "r": {"versions": "R 4.2.2, lavaan 0.6.14", "datasets": 20, "measured_seconds": 27.0,
          "per_method": [{"method": "lme4", "seconds": 0.032},
                         {"method": "glmmTMB", "seconds": 0.634}],
          "per_replication": 0.666, "replications": 1000, "extrapolated_seconds": 666.0,
          "ratio_cold": 111.0, "ratio_warm": 132.93},
    "parallel": {"replications": 600, "n_jobs_1": 58.33, "n_jobs_2": 35.47,
                 "speedup": 1.644, "ceiling": 1.52},
    "memory": {"cells_2_mib": 131.0, "cells_200_mib": 134.0, "ratio": 1.023},
    "targets": [{"key": "r_ratio", "op": ">=", "bound": 500.0, "text": "R ratio",
                 "cold": 111.0, "warm": None, "met_cold": False, "met_warm": None}],
}


def test_the_figures_render_their_rows():
    md = render_markdown(FIGURES)
    lines = md.splitlines()
    assert "| sem | 2.602 | 0.500 | 0.070 | 37 |" in lines
    assert "| blup | 0.543 |  |  |  |" in lines
    assert "| sem | 12.000 | 2.000 | 1.500 | 8.0 |" in lines
    assert ("| clark2020 row 16 | 6.00 s | 9.50 s | 140 MiB | 5.01 s | 8.21 s | 133 MiB | 3 |"
            in lines)
    assert "| cv2007, 5 methods |  |  |  | 6.00 s | 9.50 s | 140 MiB | 1 |" in lines
    assert "| R ratio | >= 500 | 111 | **not met** |  | not measured |" in lines
    assert "**111x** faster cold and **133x** warm" in md
    assert "Cold = first run, empty bytecode cache" in md
    assert "Test CPU, 2 cores" in md and "R 4.2.2, lavaan 0.6.14" in md
    assert "**1.64x**" in md and "ratio **1.02**" in md
    assert md.endswith("\n") and BEGIN not in md and END not in md


def test_a_quick_run_has_no_verdicts_and_no_r():
    md = render_markdown({**FIGURES, "quick": True, "targets": None, "r": None})
    assert "Not judged: a `--quick` run" in md
    assert "R pipeline not available" in md and "Not measured: Rscript" in md
    assert "| target |" not in md


def test_replace_block_keeps_the_text_around_the_markers():
    text = f"# Benchmarks\n\nNarrative.\n\n{BEGIN}\nold figures\n{END}\n\n## Later\nMore.\n"
    new = replace_block(text, "new figures\n")
    assert new == f"# Benchmarks\n\nNarrative.\n\n{BEGIN}\nnew figures\n{END}\n\n## Later\nMore.\n"
    assert replace_block(new, "new figures") == new


def test_replace_block_appends_an_absent_marker_pair():
    assert replace_block("# Benchmarks\n", "figures\n") == \
        f"# Benchmarks\n\n{BEGIN}\nfigures\n{END}\n"
    assert replace_block("", "figures\n") == f"{BEGIN}\nfigures\n{END}\n"
    assert replace_block("no newline", "b") == f"no newline\n\n{BEGIN}\nb\n{END}\n"


def test_replace_block_refuses_a_lone_marker():
    with pytest.raises(ValueError, match="only one of the markers"):
        replace_block(f"text\n{BEGIN}\nfigures\n", "new\n")
    with pytest.raises(ValueError, match="only one of the markers"):
        replace_block(f"text\n{END}\n", "new\n")

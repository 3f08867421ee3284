"""Summarise a study's runs into the committed tables of docs/studies/.

Usage (after ``micromacro run configs/unbalanced_mcar.yaml``, ``configs/unbalanced_poisson.yaml``
or ``configs/bayes_few_groups.yaml``; the runs may be split into parts, each part a folder,
since scenario keys leave the grid out)::

    python tools/study_summary.py NAME RUN_DIR [RUN_DIR ...]

writes ``docs/studies/NAME_summary.csv``: per cell, method and slope (z, xi) the
replications with estimates (``k`` of ``n_reps``; flagged fits excluded, as in default
summaries), bias, percent bias, empirical SE, RMSE and the 95% coverage of the classical
(model) and HC3 intervals, each with its Monte Carlo SE, and coverage and rejection on each
method's default SE type (``se_type``; a method's own credible interval where it has one,
``ci_level``), and, for the methods with ``se: jackknife``, the mean jackknife SE and the
coverage and rejection of its intervals beside HC3's (``*_JK``, ``*_HC3``); and ``NAME_flags.csv``: per cell and
method the counts of flagged, not converged, inadmissible and not applicable fits, by reason.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["label", "n_groups", "group_size_label", "icc", "r_zxi", "method", "term",
           "theta", "n_reps", "k", "bias", "bias_mcse", "pct_bias", "pct_bias_mcse", "empse",
           "empse_mcse", "rmse", "rmse_mcse", "cover_classical", "cover_classical_mcse",
           "cover_HC3", "cover_HC3_mcse", "reject_classical", "reject_classical_mcse",
           "beta_xi", "se_type", "ci_level", "cover", "cover_mcse", "reject", "reject_mcse",
           "modse_HC3", "modse_JK", "cover_JK", "cover_JK_mcse", "reject_HC3",
           "reject_HC3_mcse", "reject_JK", "reject_JK_mcse"]


def summarise(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The slopes' measures and the flag counts of every run folder, stacked."""
    perf, flags = [], []
    for run in run_dirs:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "micromacro_sim", "summarize", str(run),
                            "--output", tmp], check=True, capture_output=True)
            perf.append(pd.read_csv(Path(tmp) / "summary.csv"))
            flags.append(pd.read_csv(Path(tmp) / "flags.csv"))
    p = pd.concat(perf, ignore_index=True)
    p = p[p["term"] != "intercept"][[c for c in COLUMNS if c in p.columns]]
    return p, pd.concat(flags, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__)
        return 2
    name, runs = args[0], [Path(a) for a in args[1:]]
    perf, flags = summarise(runs)
    out = ROOT / "docs" / "studies"
    out.mkdir(parents=True, exist_ok=True)
    perf.to_csv(out / f"{name}_summary.csv", index=False, float_format="%.6g")
    flags.to_csv(out / f"{name}_flags.csv", index=False, float_format="%.6g")
    print(f"wrote {out / f'{name}_summary.csv'} ({len(perf)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The allow list of 0.4.0 (full-information ML with absent members): each exception's class.

Usage, after ``tools/equivalence.py refs`` (or ``compare``)::

    python tools/equivalence_allow_0_4_0.py OLD_OUT NEW_OUT REPORT_DIR \\
        --out docs/equivalence/0.4.0-allow.csv

Every exception of ``REPORT_DIR/exceptions.csv`` is put in one class by criteria read from
both sides' verdicts (``OLD_OUT``/``NEW_OUT``: the ``equivalence.py run`` folders) and from
the data of the fit (complete or not), never by its identity. An exception no criterion
covers is not listed (the compare with this allow list then fails). The classes, all on
datasets with unequal groups or absent members (the corpora ``missing_members``,
``group_sizes`` and the cross-check's unbalanced design; complete balanced data keep the
closed forms, bit for bit):

``now_fits`` (rule 1)
    One of the wide-format methods (``sem``, ``zcond_score``, ``factor_score``, ``sam``)
    was ``not_applicable`` with reason ``needs_balanced``; it now fits by full-information
    ML (any status, or ``not_applicable`` for a reason of the FIML model:
    ``sparse_position``, ``too_few_members``). The issue's listed exception.
``now_fits_estimates`` (rules 2, 3)
    Estimates or SEs of such a fit, which had none before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["corpus", "cell", "replication", "method"]
WIDE = ["sem", "zcond_score", "factor_score", "sam"]
NEW_REASONS = ["", "sparse_position", "too_few_members", "not_converged", "negative_variance",
               "not_positive_definite", "sample_cov_not_positive_definite", "non_finite",
               "marker_not_identified", "lower_inadmissible_optimum", "rank_deficient",
               "perfect_fit", "leverage_one"]
NOTES = {
    "now_fits": "0.4.0 (FIML): not applicable on unequal groups or absent members before; "
                "fitted by full-information ML now",
    "now_fits_estimates": "0.4.0 (FIML): estimates of a fit that had none before",
}


def _verdicts(folder: Path) -> pd.DataFrame:
    v = pd.read_parquet(folder / "verdicts.parquet")
    return v[KEY + ["status", "reason_code"]]


def classify(old: Path, new: Path, report: Path) -> pd.DataFrame:
    """Each exception of the report with its class ('' where no criterion holds)."""
    exc = pd.read_csv(report / "exceptions.csv", dtype={"cell": str})
    m = _verdicts(old).merge(_verdicts(new), on=KEY, suffixes=("_old", "_new"))
    m["cell"] = m["cell"].astype(str)
    exc = exc.merge(m, on=KEY, how="left")
    rule = exc.rule.astype(str)
    was_refused = (exc.method.isin(WIDE) & (exc.status_old == "not_applicable")
                   & (exc.reason_code_old == "needs_balanced"))
    fits_now = exc.reason_code_new.fillna("").isin(NEW_REASONS)
    cls = np.full(len(exc), "", dtype=object)
    cls[was_refused & fits_now & (rule == "1")] = "now_fits"
    cls[was_refused & fits_now & rule.isin(["2", "3"])] = "now_fits_estimates"
    exc["allow_class"] = cls
    return exc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    exc = classify(args.old, args.new, args.report)
    viol = exc[exc.severity == "violation"]
    listed = viol[viol.allow_class != ""]
    allow = listed[KEY + ["term", "quantity", "rule", "class"]].copy()
    allow["note"] = listed.allow_class.map(NOTES)
    allow = allow.astype(object).fillna("").drop_duplicates()
    allow.to_csv(args.out, index=False)
    counts = viol.assign(c=viol.allow_class.replace("", "UNCLASSIFIED")).groupby(
        ["corpus", "method", "rule", "c"]).size()
    print(counts.to_string())
    left = int((viol.allow_class == "").sum())
    print(f"{len(viol)} violations, {len(viol) - left} classified, {left} not")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())

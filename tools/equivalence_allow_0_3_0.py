"""The allow list of 0.3.0 (the profiled CFA): each exception's class, checked, with its reason.

Usage, after ``tools/equivalence.py compare`` and ``tools/equivalence_flat.py``::

    python tools/equivalence_allow_0_3_0.py OLD_OUT NEW_OUT REPORT_DIR \\
        --out docs/equivalence/0.3.0-allow.csv

Every exception of ``REPORT_DIR/exceptions.csv`` is put in one class by criteria read from
both sides' verdicts (``OLD_OUT``/``NEW_OUT``: the ``equivalence.py run`` folders), never by
its identity. An exception no criterion covers is not listed (the compare with this allow
list then fails). The classes (all factor_score and its CFA gate; no other method changed):

``now_converges`` (rule 1)
    The old CFA did not converge (reason ``not_converged``); the new one converges. Rule 1's
    own exception.
``lower_admissible`` (rule 1)
    The old fit kept an inadmissible solution (``negative_variance``) that was not the global
    optimum; the new fit finds a lower, admissible one: status ``ok``.
``old_local_optimum`` (rule 1)
    The old fit was ``ok`` on a solution that is not the global optimum: the new fit finds
    a lower one (by more than 1e-9), which is inadmissible, so it is flagged
    ``negative_variance`` (the package keeps the global optimum and says so; issue 12).
``loose_stop`` (rule 3)
    The same optimum (discrepancies within 1e-9), estimates or SEs further apart than 1e-8
    relative: the old Newton fit stops at a larger gradient (up to 1.4e-4 in lavaan's
    parametrization) or the optimum is flat (Hessian condition number listed); requires the
    ``grad_old``/``grad_new``/``hess_cond`` columns of ``tools/equivalence_flat.py`` with
    grad_new < grad_old or hess_cond > 1e6.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["corpus", "cell", "replication", "method"]
NOTES = {
    "now_converges": "0.3.0 (profiled CFA): the old CFA did not converge; the new one does",
    "lower_admissible": "0.3.0 (profiled CFA): the old kept an inadmissible non-global "
                        "solution; the new finds a lower admissible optimum",
    "old_local_optimum": "0.3.0 (profiled CFA): the old ok fit was a non-global optimum; the "
                         "global optimum is inadmissible and flagged",
    "loose_stop": "0.3.0 (profiled CFA): same optimum; the old fit stopped at a larger "
                  "gradient or the optimum is flat (flat.csv: gradients, condition number)",
}


def _verdicts(folder: Path) -> pd.DataFrame:
    v = pd.read_parquet(folder / "verdicts.parquet")
    return v[KEY + ["status", "reason_code", "discrepancy"]]


def classify(old: Path, new: Path, report: Path) -> pd.DataFrame:
    """Each exception of the report with its class ('' where no criterion holds)."""
    exc = pd.read_csv(report / "exceptions.csv", dtype={"cell": str})
    m = _verdicts(old).merge(_verdicts(new), on=KEY, suffixes=("_old", "_new"))
    m["cell"] = m["cell"].astype(str)
    exc = exc.merge(m, on=KEY, how="left")
    lower = exc.discrepancy_new < exc.discrepancy_old - 1e-9
    rule = exc.rule.astype(str)
    cfa = exc.method.isin(["factor_score", "gate:lavaan_cfa", "gate:cfa"])
    cls = np.full(len(exc), "", dtype=object)
    r1 = cfa & (rule == "1")
    cls[r1 & (exc.reason_code_old == "not_converged") & (exc.status_new != "not_converged")
        & (exc.reason_code_new != "not_converged")] = "now_converges"
    cls[r1 & (exc.reason_code_old == "negative_variance") & (exc.status_new == "ok")
        & lower] = "lower_admissible"
    cls[r1 & (exc.status_old == "ok") & (exc.reason_code_new == "negative_variance")
        & lower] = "old_local_optimum"
    if {"grad_old", "grad_new", "hess_cond"} <= set(exc.columns):
        flat = (exc.grad_new < exc.grad_old) | (exc.hess_cond > 1e6)
        cls[cfa & (rule == "3") & flat.fillna(False).to_numpy()] = "loose_stop"
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
    allow = allow.fillna("").drop_duplicates()
    allow.to_csv(args.out, index=False)
    counts = viol.assign(c=viol.allow_class.replace("", "UNCLASSIFIED")).groupby(
        ["corpus", "rule", "c"]).size()
    print(counts.to_string())
    left = int((viol.allow_class == "").sum())
    print(f"{len(viol)} violations, {len(viol) - left} classified, {left} not")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())

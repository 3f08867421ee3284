"""Rule 3 of the equivalence report: is a larger difference on the same optimum a flat one?

Usage (after ``tools/equivalence.py compare``; the package in this checkout is the new
side)::

    python tools/equivalence_flat.py REPORT_DIR SIDE_DIR

For every rule-3 exception (the same optimum, an estimate or SE differing by more than
1e-8 relative) of a method whose discrepancy is the one-factor CFA's (factor_score), the
kept dataset is regenerated from its stream (``SIDE_DIR``: the corpora configs and the
redraw counts of one side's ``equivalence.py run``) and fitted by both CFA solvers: the
Newton fit of versions up to 0.2.0 (:func:`micromacro_sim.models.cfa_fit.fit_arrays`,
kept for this comparison) and the profiled fit of 0.3.0. At each solution, in lavaan's
marker parametrization (2n free parameters): ``fmin``, the largest absolute gradient
entry of the ML discrepancy, and the condition number of its Hessian. Writes
``REPORT_DIR/flat.csv`` (one row per dataset) and adds the columns ``grad_old``,
``grad_new`` and ``hess_cond`` to ``REPORT_DIR/exceptions.csv`` (empty for other rows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from equivalence_corpora import _crosscheck_draw  # noqa: E402

from micromacro_sim.generate.dgp import generate  # noqa: E402
from micromacro_sim.generate.seeding import replication_rng  # noqa: E402
from micromacro_sim.models import cfa_solver  # noqa: E402
from micromacro_sim.models.cfa_fit import fit_arrays  # noqa: E402
from micromacro_sim.models.cfa_profile import fit_arrays_profiled  # noqa: E402
from micromacro_sim.run.configure import load_config  # noqa: E402

CFA_METHODS = ("factor_score",)


def _dataset(side: Path, corpus: str, cell: str, rep: int, redraws: pd.DataFrame):
    """The kept dataset of one replication, regenerated from its stream."""
    if corpus == "crosscheck":
        return _crosscheck_draw(cell, rep)
    cfg = load_config(side / "corpora" / f"{corpus}.yaml")
    (sc,) = [s for s in cfg.scenarios if s.key == cell]
    hit = redraws[(redraws.corpus == corpus) & (redraws.cell == cell)
                  & (redraws.replication == rep)]
    attempt = int(hit.redraws.iloc[0]) if len(hit) else 0
    return generate(sc, replication_rng(cfg.seed, sc, rep, attempt))


def solution_checks(X: np.ndarray, fit: dict) -> tuple[float, float, float]:
    """``(fmin, max |gradient|, Hessian condition number)`` of the ML discrepancy at a
    fit's solution, in the marker parametrization (the first loading fixed)."""
    n = X.shape[2]
    dev = X - X.mean(axis=1, keepdims=True)
    S = np.einsum("rgi,rgj->rij", dev, dev) / X.shape[1]
    logdet_s = np.linalg.slogdet(S)[1]
    theta = np.concatenate([fit["loadings"], fit["residual_variances"],
                            fit["factor_variance"][:, None]], axis=1)
    f, A = cfa_solver.discrepancy(theta, S, logdet_s)
    grad, _, hess = cfa_solver.derivatives(theta, S, A)
    free = np.r_[1:n, n:2 * n + 1]
    g = grad[0, free]
    H = hess[0][np.ix_(free, free)]
    return float(f[0]) / 2.0, float(np.max(np.abs(g))), float(np.linalg.cond(H))


def flat_table(report: Path, side: Path) -> pd.DataFrame:
    """One row per dataset with a rule-3 exception of a CFA method: both solutions' checks."""
    exc = pd.read_csv(report / "exceptions.csv", dtype={"cell": str})
    sel = exc[(exc.rule.astype(str) == "3") & exc.method.isin(CFA_METHODS)]
    redraws = pd.read_parquet(side / "datasets.parquet")
    rows = []
    for (corpus, cell, rep), part in sel.groupby(["corpus", "cell", "replication"]):
        data = _dataset(side, corpus, cell, int(rep), redraws)
        X = data.wide(0)[None]
        old, new = fit_arrays(X), fit_arrays_profiled(X)
        f_o, g_o, c_o = solution_checks(X, old)
        f_n, g_n, c_n = solution_checks(X, new)
        rows.append(dict(corpus=corpus, cell=cell, replication=int(rep),
                         n_exceptions=len(part), max_rel_diff=part.rel_diff.max(),
                         fmin_old=f_o, fmin_new=f_n, grad_old=g_o, grad_new=g_n,
                         hess_cond=c_n, hess_cond_old=c_o))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("side", type=Path)
    args = ap.parse_args(argv)
    flat = flat_table(args.report, args.side)
    flat.to_csv(args.report / "flat.csv", index=False)
    exc = pd.read_csv(args.report / "exceptions.csv", dtype={"cell": str})
    key = ["corpus", "cell", "replication"]
    exc = exc.drop(columns=[c for c in ("grad_old", "grad_new", "hess_cond") if c in exc])
    cols = flat[[*key, "grad_old", "grad_new", "hess_cond"]] if len(flat) else None
    if cols is not None:
        is3 = (exc.rule.astype(str) == "3") & exc.method.isin(CFA_METHODS)
        merged = exc[is3].merge(cols, on=key, how="left")
        exc = pd.concat([exc[~is3], merged], ignore_index=True)
    exc.to_csv(args.report / "exceptions.csv", index=False)
    if len(flat):
        print(f"{len(flat)} datasets with rule-3 exceptions of {', '.join(CFA_METHODS)}: "
              f"|fmin new - old| <= {np.max(np.abs(flat.fmin_new - flat.fmin_old)):.2g}; "
              f"max |gradient| old {flat.grad_old.max():.2g} (median "
              f"{flat.grad_old.median():.2g}), new {flat.grad_new.max():.2g}; Hessian "
              f"condition number {flat.hess_cond.min():.3g} to {flat.hess_cond.max():.3g}")
    else:
        print("no rule-3 exceptions of a CFA method")
    return 0


if __name__ == "__main__":
    sys.exit(main())

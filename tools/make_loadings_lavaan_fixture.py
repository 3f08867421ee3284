"""lavaan's fits of factor_score's CFA on the unequal-loadings cell's first-draw datasets.

Usage
-----
``python tools/make_loadings_lavaan_fixture.py [--replications N]`` writes the fixture
(needs Rscript with lavaan); ``python tools/make_loadings_lavaan_fixture.py --compare``
reads it and prints the comparison of the old and new CFA solvers with lavaan (no R
needed). Run from the repository root.

Datasets
--------
The package's own: the cell of ``configs/examples/loadings.yaml`` with loadings 1 and .4
and residual variances 1 and 3 times sigma2_nu (the config's seed), replications
0..N-1, draw attempt 0 (the first draw, before any redraw), generated exactly as a run
generates them; the CFA data are each dataset's wide G x n matrix (``Dataset.wide``, as
factor_score builds it).

What it writes
--------------
``tests/fixtures/cfa_lavaan/loadings_unequal_first_draws.csv``, one row per replication:
lavaan's fit of factor_score's reference call ``cfa('lv =~ x1 + ... + x6', data,
meanstructure = TRUE)`` (default ML): ``converged``, ``post_check``, ``accepted`` (both),
``fmin`` (``fit@optim$fx``), the largest absolute gradient element, the iterations, the
estimates ``lambda2..lambda6``, ``theta1..theta6`` (residual variances) and ``phi``, and
two checks of recomputing factor_score's xi (``lavPredict(fit, method = "regression")``)
from these estimates: ``max_nu_dev`` (largest |intercept - sample mean|) and
``score_gap`` (largest |lavPredict - phi lambda' Sigma^-1 (x - xbar)| over the groups).
The datasets are not stored (they are redrawn from their streams); ``sum_x`` per dataset
guards that they are the same. Read by ``tests/test_kernels_cfa.py``.

The comparison (``--compare``) fits the same datasets with
:func:`micromacro_sim.models.cfa_fit.fit_arrays` (old, before 0.3.0) and
:func:`micromacro_sim.models.cfa_profile.fit_arrays_profiled` (new) and prints, for each:
the fits not ok (not converged or flagged) against lavaan's failures (not converged or
post.check false), and where lavaan passes, the max and median absolute difference of the
parameters and of the regression scores xi (both sides by the package's score formula),
and where they differ by more than 1e-4 whether ours has the lower or the higher fmin (another
optimum).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_cfa_lavaan_fixture import write_csv  # noqa: E402

from micromacro_sim.design.scenario import Scenario  # noqa: E402
from micromacro_sim.generate.dgp import generate  # noqa: E402
from micromacro_sim.generate.seeding import replication_rng  # noqa: E402
from micromacro_sim.run.configure import load_config  # noqa: E402

CONFIG = ROOT / "configs" / "examples" / "loadings.yaml"
OUT = ROOT / "tests" / "fixtures" / "cfa_lavaan" / "loadings_unequal_first_draws.csv"
LOADINGS = [1.0, 0.4]
MEMBER_VARIANCES = [1.0, 3.0]
#: Parameters agree when within this (absolute); fmin lower by more than SAME_F is another optimum.
TOL = 1e-4
SAME_F = 1e-9

#: factor_score's reference fit (README, the cross-check script), one dataset at a time.
R_SCRIPT = r"""
suppressMessages(library(lavaan))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
items <- grep("^x[0-9]+$", names(d), value = TRUE)
n <- length(items)
model <- paste("lv =~", paste(items, collapse = " + "))
num <- function(v) if (is.null(v) || length(v) == 0) NA_real_ else as.numeric(v)[1]
out <- list()
for (r in sort(unique(d$replication))) {
  w <- d[d$replication == r, items]
  X <- as.matrix(w)
  row <- list(replication = r, converged = NA, post_check = NA, fmin = NA_real_,
              max_abs_gradient = NA_real_, iterations = NA_real_)
  for (j in 2:n) row[[paste0("lambda", j)]] <- NA_real_
  for (j in 1:n) row[[paste0("theta", j)]] <- NA_real_
  row$phi <- NA_real_
  row$max_nu_dev <- NA_real_
  row$score_gap <- NA_real_
  row$sum_x <- sum(X)
  row$error <- ""
  fit <- tryCatch(suppressWarnings(cfa(model, data = w, meanstructure = TRUE)),
                  error = function(e) e)
  if (inherits(fit, "error")) {
    row$error <- gsub("[\r\n,]", " ", conditionMessage(fit))
  } else {
    row$converged <- lavInspect(fit, "converged")
    row$post_check <- tryCatch(suppressWarnings(lavInspect(fit, "post.check")),
                               error = function(e) NA)
    row$fmin <- num(fit@optim$fx)
    row$max_abs_gradient <- if (length(fit@optim$dx)) max(abs(fit@optim$dx)) else NA_real_
    row$iterations <- num(fit@optim$iterations)
    est <- lavInspect(fit, "est")
    lam <- as.vector(est$lambda[, 1])
    th <- diag(est$theta)
    phi <- est$psi[1, 1]
    for (j in 2:n) row[[paste0("lambda", j)]] <- lam[j]
    for (j in 1:n) row[[paste0("theta", j)]] <- th[j]
    row$phi <- phi
    xbar <- colMeans(X)
    row$max_nu_dev <- max(abs(as.vector(est$nu) - xbar))
    row$score_gap <- tryCatch({
      fs <- as.vector(lavPredict(fit, method = "regression"))
      sig <- phi * tcrossprod(lam) + diag(th)
      w_ <- phi * solve(sig, lam)
      max(abs(fs - sweep(X, 2, xbar) %*% w_))
    }, error = function(e) NA_real_)
  }
  out[[length(out) + 1]] <- as.data.frame(row, stringsAsFactors = FALSE)
}
res <- do.call(rbind, out)
res$accepted <- !is.na(res$converged) & res$converged & !is.na(res$post_check) & res$post_check
for (nm in names(res)) {
  if (is.double(res[[nm]]) && nm != "replication") res[[nm]] <- signif(res[[nm]], 15)
}
write.csv(res, args[2], row.names = FALSE)
"""


def cell() -> tuple[Scenario, int]:
    """The unequal cell (loadings 1/.4, residual multipliers 1/3) and the config's seed."""
    config = load_config(CONFIG)
    (sc,) = [s for s in config.scenarios
             if s.to_params()["loadings"] == LOADINGS
             and s.to_params()["member_variances"] == MEMBER_VARIANCES]
    return sc, config.seed


def first_draws(replications) -> np.ndarray:
    """Wide matrices (R, G, n) of the given replications (an int N: 0..N-1), attempt 0."""
    if isinstance(replications, int):
        replications = range(replications)
    sc, seed = cell()
    return np.stack([generate(sc, replication_rng(seed, sc, int(r), 0)).wide(0)
                     for r in replications])


def lavaan_params(ref) -> dict[str, np.ndarray]:
    """lavaan's estimates in the fixture as the fields of a CFA fit (loadings first 1)."""
    n = sum(c.startswith("theta") for c in ref.columns)
    lam = np.column_stack([np.ones(len(ref))]
                          + [ref[f"lambda{j}"].to_numpy(float) for j in range(2, n + 1)])
    psi = np.column_stack([ref[f"theta{j}"].to_numpy(float) for j in range(1, n + 1)])
    return dict(loadings=lam, residual_variances=psi,
                factor_variance=ref["phi"].to_numpy(float))


def regression_scores(X: np.ndarray, fit: dict) -> np.ndarray:
    """factor_score's xi (R, G): phi lambda' Sigma^-1 (x - xbar) (``CFABatch.scores``)."""
    from micromacro_sim.core.status import no_flags
    from micromacro_sim.models.cfa import CFABatch

    R = len(X)
    batch = CFABatch(loadings=fit["loadings"], residual_variances=fit["residual_variances"],
                     factor_variance=fit["factor_variance"], intercepts=X.mean(axis=1),
                     fmin=np.full(R, np.nan), converged=np.ones(R, bool),
                     admissible=np.ones(R, bool), flags=no_flags(R), n_iter=np.zeros(R, int),
                     lavaan_flags=no_flags(R))
    return batch.scores(X, method="regression")


def param_diff(ours: dict, lav: dict) -> np.ndarray:
    """Largest absolute parameter difference per replication."""
    parts = [np.abs(ours[k] - lav[k]).reshape(len(lav["factor_variance"]), -1)
             for k in ("loadings", "residual_variances", "factor_variance")]
    return np.max(np.concatenate(parts, axis=1), axis=1)


def not_ok(fit: dict) -> np.ndarray:
    """Fits that are not ok: not converged or flagged."""
    return ~np.asarray(fit["converged"], bool) | np.array([bool(f) for f in fit["flags"]])


def compare(ref, X: np.ndarray, fit: dict) -> dict:
    """One solver against lavaan on the fixture's datasets (see the module docstring)."""
    lav = lavaan_params(ref)
    passes = ref["accepted"].to_numpy(bool)
    bad = not_ok(fit)
    dpar = param_diff(fit, lav)
    dxi = np.max(np.abs(regression_scores(X, fit) - regression_scores(X, lav)), axis=1)
    both = passes & ~bad
    differ = both & ~((dpar <= TOL) & (dxi <= TOL))
    with np.errstate(invalid="ignore"):
        lower = differ & (fit["fmin"] < ref["fmin"].to_numpy(float) - SAME_F)
        higher = differ & (fit["fmin"] > ref["fmin"].to_numpy(float) + SAME_F)
    return dict(
        fits=len(X), not_converged=int((~np.asarray(fit["converged"], bool)).sum()),
        not_ok=int(bad.sum()), lavaan_fail=int((~passes).sum()),
        not_ok_lavaan_passes=int((bad & passes).sum()), both=int(both.sum()),
        par_max=float(np.max(dpar[both], initial=0.0)), par_med=float(np.median(dpar[both])),
        xi_max=float(np.max(dxi[both], initial=0.0)), xi_med=float(np.median(dxi[both])),
        par_same=float(np.max(dpar[both & ~differ], initial=0.0)),
        xi_same=float(np.max(dxi[both & ~differ], initial=0.0)),
        differ=np.flatnonzero(differ).tolist(), lower=np.flatnonzero(lower).tolist(),
        higher=np.flatnonzero(higher).tolist(),
        not_ok_reps=np.flatnonzero(bad & passes).tolist(),
    )


def read_fixture(path: Path = OUT):
    """The fixture and the regenerated datasets, their checksums verified."""
    import pandas as pd

    ref = pd.read_csv(path)
    X = first_draws(ref["replication"].tolist())
    np.testing.assert_allclose(X.sum(axis=(1, 2)), ref["sum_x"], rtol=1e-9, atol=1e-8)
    return ref, X


def print_comparison() -> None:
    """The old and new solvers against lavaan (a small Markdown table and the exceptions)."""
    from micromacro_sim.models.cfa_fit import fit_arrays
    from micromacro_sim.models.cfa_profile import fit_arrays_profiled

    ref, X = read_fixture()
    passes = ref["accepted"].to_numpy(bool)
    print(f"lavaan: {int(ref['converged'].fillna(False).astype(bool).sum())} of {len(ref)} "
          f"converged, {int(passes.sum())} also pass post.check; where they pass, max "
          f"score_gap {ref['score_gap'][passes].max():.1e}, "
          f"max |nu - xbar| {ref['max_nu_dev'][passes].max():.1e}")
    cols = ["solver", "not converged", "not ok", "lavaan fails", "not ok where lavaan passes",
            "both ok", "|param diff| max / median / max without differ",
            "|xi diff| max / median / max without differ",
            f"differ > {TOL:g}", "our fmin lower / higher there"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    notes = []
    for name, fn in (("old (cfa_fit)", fit_arrays), ("new (cfa_profile)", fit_arrays_profiled)):
        s = compare(ref, X, fn(X))
        print(f"| {name} | {s['not_converged']} | {s['not_ok']} | {s['lavaan_fail']} | "
              f"{s['not_ok_lavaan_passes']} | {s['both']} | "
              f"{s['par_max']:.1e} / {s['par_med']:.1e} / {s['par_same']:.1e} | "
              f"{s['xi_max']:.1e} / {s['xi_med']:.1e} / {s['xi_same']:.1e} | "
              f"{len(s['differ'])} | {len(s['lower'])} / {len(s['higher'])} |")
        notes.append(f"{name}: not ok where lavaan passes {s['not_ok_reps'][:20]}; "
                     f"differ {s['differ'][:20]}; lower fmin {s['lower'][:20]}; "
                     f"higher fmin {s['higher'][:20]}")
    print("\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=1000)
    ap.add_argument("--compare", action="store_true",
                    help="compare the old and new solvers with the fixture (no R)")
    args = ap.parse_args(argv)
    if args.compare:
        print_comparison()
        return 0
    wide = first_draws(args.replications)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data, script = Path(tmp) / "wide.csv", Path(tmp) / "fit.R"
        write_csv(wide, data)
        script.write_text(R_SCRIPT)
        return subprocess.call(["Rscript", str(script), str(data), str(OUT)])


if __name__ == "__main__":
    sys.exit(main())

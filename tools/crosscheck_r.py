"""Cross-check every method against its R peer on new datasets of the package's generator.

Usage (from the repository root, Rscript with lavaan, lme4, glmmTMB and sandwich)::

    python tools/crosscheck_r.py [--n 25] [--work DIR] [--out tests/fixtures/crosscheck]

Four designs (balanced, unbalanced, several Z with q = 2, low ICC), ``--n`` datasets each,
drawn by :func:`micromacro_sim.generate.dgp.generate` from seeds that derive from
(ROOT_SEED, design,
dataset). Each dataset is written as a long CSV with a member column (member = position in
the group) and fitted

* here, through the user-data API ``micromacro_sim.fit(frame, group=, x=, z=, y=, member=,
  method=...)`` (the oracle ``true`` needs the true xi and goes through
  :func:`micromacro_sim.api.fit_dataset`);
* in R, by ``tools/r/crosscheck.R`` (the peers of the README's Methods table). croon's
  first step has no R implementation: its peer is the second step (lm + vcovHC) on the
  package's adjusted means.

A fit is accepted here when its status is ``ok``; in R when it converged and passed the
peer's check (lavaan: ``post.check``; lme4: no convergence message and not singular;
glmmTMB: convergence 0 and a positive-definite Hessian; lm: always). Where both accept,
the estimates of (intercept, z, x) and their SEs (every SE type both report: classical and
HC0-HC3 for two-step methods, the model SE for one-step models) are compared. Writes
``summary.csv`` (per method and design: acceptance cross-table and the largest differences)
and ``disagreements.csv`` (every dataset where the verdicts differ or a difference exceeds
the tolerance) to ``--out``, and the full per-dataset table to ``--work``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import micromacro_sim as mm  # noqa: E402
from micromacro_sim.api.fitting import fit_dataset
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate

ROOT = Path(__file__).resolve().parents[1]
R_SCRIPT = ROOT / "tools" / "r" / "crosscheck.R"
ROOT_SEED = 20240612
EST_TOL, SE_TOL = 1e-4, 1e-3

#: design -> scenario parameters (index in this dict is part of the seed)
DESIGNS: dict[str, dict] = {
    "balanced": dict(n_groups=100, group_size=10, icc=0.2, r_zxi=0.3),
    "unbalanced": dict(n_groups=60, group_size={"uniform": [3, 15]}, icc=0.2, r_zxi=0.3),
    "several_z": dict(n_groups=60, group_size=5, icc=0.2, r_zxi=[0.3, 0.2], n_z=2),
    "low_icc": dict(n_groups=50, group_size=10, icc=0.05, r_zxi=0.3),
}

#: label -> method spec, as in a config's ``methods:`` list
METHODS: dict[str, str | dict] = {
    "unadjusted": "unadjusted",
    "croon": "croon",
    "blup": "blup",
    "blup_ml": {"method": "blup", "reml": False},
    "blup_hetvar": "blup_hetvar",
    "factor_score": "factor_score",
    "zcond_score": "zcond_score",
    "sem": "sem",
    "sem_2level": "sem_2level",
    "sem_2level_fx": {"method": "sem_2level", "lavaan_fixed_x": True},
    "sam": "sam",
}
ALL_METHODS = ("true", *METHODS)


def draw(design: str, i: int):
    """Dataset ``i`` of ``design`` (its own seed: ROOT_SEED, design index, i)."""
    k = list(DESIGNS).index(design)
    rng = np.random.default_rng(np.random.SeedSequence([ROOT_SEED, k, i]))
    return generate(Scenario.from_params(DESIGNS[design]), rng)


def long_frame(data) -> pd.DataFrame:
    """Long frame: group, member (position in the group), x, y, z1..zq, xi."""
    df = pd.DataFrame({"group": data.group, "member": data.position, "x": data.x[:, 0]})
    g = data.group
    df["y"] = data.y[g]
    for j in range(data.n_z):
        df[f"z{j + 1}"] = data.z[g, j]
    df["xi"] = data.xi[g, 0]
    return df


def _rows(ds: str, label: str, res, zs: list[str]) -> list[dict]:
    """Estimate and SE rows of one FitResult, terms renamed (intercept, z1.., x)."""
    terms = ["intercept", *zs, "x"]
    if len(res.terms) != len(terms):
        raise RuntimeError(f"{label}: unexpected terms {res.terms}")
    out = [dict(dataset=ds, method=label, term=t, kind="est", value=float(v))
           for t, v in zip(terms, res.params, strict=True)]
    for kind, se in res.bse.items():
        out += [dict(dataset=ds, method=label, term=t, kind=kind, value=float(v))
                for t, v in zip(terms, se, strict=True)]
    return out


def fit_ours(ds: str, data, frame: pd.DataFrame) -> tuple[list[dict], list[dict], np.ndarray]:
    """Fit every method here; returns estimate rows, verdict rows and croon's scores."""
    zs = [c for c in frame.columns if c.startswith("z")]
    res = mm.fit(frame, group="group", x="x", z=zs, y="y", member="member",
                 method=[{k: v} if isinstance(v, dict) else {k: {"method": v}}
                         for k, v in METHODS.items()])
    fits = {"true": fit_dataset(data, ["true"])[0], **{m: res[m].fit for m in METHODS}}
    est, verdicts = [], []
    for label, f in fits.items():
        verdicts.append(dict(dataset=ds, method=label, status=f.status.value,
                             reason_code=f.reason_code or "", reason=f.reason or ""))
        if np.all(np.isfinite(f.params)) and f.params.size:
            est += _rows(ds, label, f, zs)
    croon = fits["croon"]
    scores = np.asarray(croon.extras.get("scores", np.full(data.n_groups, np.nan)), float)
    if croon.status.value != "ok":
        scores = np.full(data.n_groups, np.nan)
    return est, verdicts, scores.reshape(data.n_groups, -1)[:, 0]


def run(designs: dict[str, int], work: Path) -> pd.DataFrame:
    """Draw, fit here and in R; the per-dataset, per-method comparison table."""
    work.mkdir(parents=True, exist_ok=True)
    frames, est, verdicts = [], [], []
    for design, n in designs.items():
        for i in range(n):
            ds = f"{design}_{i:03d}"
            data = draw(design, i)
            frame = long_frame(data)
            e, v, croon = fit_ours(ds, data, frame.drop(columns="xi"))
            est += e
            verdicts += [dict(r, design=design) for r in v]
            frame["croon"] = croon[frame["group"].to_numpy()]
            frames.append(frame.assign(dataset=ds))
    long = pd.concat(frames)
    cols = ["dataset", "group", "member", "x", "y"]
    zcols = sorted(c for c in long.columns if c.startswith("z"))
    long = long[cols + zcols + ["xi", "croon"]]
    long.to_csv(work / "long.csv", index=False, float_format="%.17g", na_rep="NA")
    pd.DataFrame(est).to_csv(work / "ours_est.csv", index=False, float_format="%.17g")
    pd.DataFrame(verdicts).to_csv(work / "ours_verdicts.csv", index=False)
    subprocess.run(["Rscript", str(R_SCRIPT), str(work / "long.csv"), str(work / "r")],
                   check=True)
    return from_work(work)


def from_work(work: Path) -> pd.DataFrame:
    """The comparison table from the files a run left in ``work``."""
    verdicts = pd.read_csv(work / "ours_verdicts.csv", keep_default_na=False)
    return compare(pd.read_csv(work / "ours_est.csv"), verdicts,
                   pd.read_csv(work / "r_est.csv"), pd.read_csv(work / "r_accept.csv"))


def compare(ours: pd.DataFrame, verdicts: pd.DataFrame, r_est: pd.DataFrame,
            r_acc: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method: both verdicts and the largest |difference| in est and SE."""
    key = ["dataset", "method", "term", "kind"]
    m = ours.merge(r_est, on=key, suffixes=("_ours", "_r"))
    m["diff"] = (m["value_ours"] - m["value_r"]).abs()
    m["is_se"] = m["kind"] != "est"
    d = m.groupby(["dataset", "method", "is_se"])["diff"].max().unstack("is_se")
    d = d.rename(columns={False: "est_diff", True: "se_diff"}).reset_index()
    acc = r_acc.rename(columns={"converged": "r_converged", "post_check": "r_post_check",
                                "accepted": "r_accepted", "note": "r_note"})
    out = verdicts.merge(acc, on=["dataset", "method"], how="left")
    out = out.merge(d, on=["dataset", "method"], how="left")
    out["ours_ok"] = out["status"] == "ok"
    out["r_run"] = out["r_accepted"].notna()
    out["r_accepted"] = out["r_accepted"].fillna(False).astype(bool)
    both = out["ours_ok"] & out["r_accepted"]
    out.loc[~both, ["est_diff", "se_diff"]] = np.nan
    return out


def summarize(detail: pd.DataFrame) -> pd.DataFrame:
    """Per method and design: acceptance cross-table and the largest differences."""
    rows = []
    for (method, design), g in detail.groupby(["method", "design"], sort=False):
        ran = g[g["r_run"] & (g["status"] != "not_applicable")]
        ok, racc = ran["ours_ok"], ran["r_accepted"]
        rows.append(dict(
            method=method, design=design, n=len(g),
            not_applicable=int((g["status"] == "not_applicable").sum()),
            both_accept=int((ok & racc).sum()), ours_only=int((ok & ~racc).sum()),
            r_only=int((~ok & racc).sum()), neither=int((~ok & ~racc).sum()),
            compared=int((ok & racc & g.loc[ran.index, "est_diff"].notna()
                          & g.loc[ran.index, "se_diff"].notna()).sum()),
            max_est_diff=float(g["est_diff"].max()) if (ok & racc).any() else np.nan,
            max_se_diff=float(g["se_diff"].max()) if (ok & racc).any() else np.nan,
        ))
    return pd.DataFrame(rows)


def disagreements(detail: pd.DataFrame) -> pd.DataFrame:
    """Rows where the verdicts differ or a difference exceeds the tolerance."""
    ran = detail["r_run"] & (detail["status"] != "not_applicable")
    bad = ran & ((detail["ours_ok"] != detail["r_accepted"]) | (detail["est_diff"] > EST_TOL)
                 | (detail["se_diff"] > SE_TOL))
    cols = ["dataset", "method", "status", "reason_code", "r_converged", "r_post_check",
            "r_accepted", "est_diff", "se_diff", "r_note"]
    return detail.loc[bad, cols].sort_values(["method", "dataset"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=25, help="datasets per design")
    ap.add_argument("--work", type=Path, default=None, help="folder for the per-dataset files")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "crosscheck")
    ap.add_argument("--reuse", action="store_true",
                    help="summarize the files a previous run left in --work")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="crosscheck_"))
    if a.reuse:
        detail = from_work(work)
    else:
        detail = run({d: a.n for d in DESIGNS}, work)
    detail.to_csv(work / "detail.csv", index=False)
    a.out.mkdir(parents=True, exist_ok=True)
    summary = summarize(detail)
    summary.to_csv(a.out / "summary.csv", index=False, float_format="%.3g")
    disagreements(detail).to_csv(a.out / "disagreements.csv", index=False, float_format="%.3g")
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(summary.to_string(index=False))
    print(f"per-dataset table: {work / 'detail.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

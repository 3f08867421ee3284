"""The pinned corpora of ``tools/equivalence.py`` and the worker that tabulates them.

Six corpora, each run with the package of one checkout:

* ``clark2020_row16``: the row-16 cell (``sigma2_nu: 9``) of ``configs/clark2020.yaml``;
* ``fjk2018_balanced_g30``: the 12 balanced G = 30 cells of ``configs/fjk2018.yaml``
  (``n_groups: 30`` and ``group_size: 10``, the only balanced size of its grid), with the
  seed study's ten methods;
* ``cv2007``: every cell of ``configs/cv2007.yaml``, with the seed study's ten methods;
* ``missing_members`` and ``group_sizes``: every cell of ``configs/examples/missing.yaml``
  (MCAR and MAR members) and ``configs/examples/group_sizes.yaml`` (Poisson and discrete
  group sizes), with the seed study's ten methods (since 0.4.0);
* ``crosscheck``: the datasets of ``tools/crosscheck_r.py`` (four designs, 25 each, drawn
  from their own seeds) fitted through ``micromacro_sim.fit(...)``.

The first three are configs derived from the shipped ones (grid cut to the corpus' cells,
replications set) and run by ``micromacro run``. Scenario keys leave the grid out, so the
derived cells have the keys and random streams of the shipped study's cells.

The functions below :func:`derive_config` run in the worker process, with the package
of the checkout under test first on the path: they import ``micromacro_sim`` inside the
function, through the public import paths (``micromacro_sim.config``, ``.seeding``,
``.dgp``, ``.scenario``, ``.api``), so that older versions work too.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

#: Replications per cell of a run corpus, and datasets per cross-check design, in --quick.
QUICK_REPLICATIONS = 3
QUICK_DATASETS = 2
#: Replications fitted and tabulated at once by the worker.
CHUNK = 250
SE_COLUMNS = {"classical": "se", "HC0": "se_HC0", "HC1": "se_HC1", "HC2": "se_HC2",
              "HC3": "se_HC3"}
VALUE_COLUMNS = ("estimate", *SE_COLUMNS.values())
#: Discrepancy kinds: the CFA's fmin, and minus the log-likelihood per person.
CFA_FMIN = "cfa_fmin"
NEG_LOGLIK = "neg_loglik_per_person"
CFA_GATES = ("cfa", "lavaan_cfa")


@dataclass(frozen=True)
class RunCorpus:
    """A corpus run by ``micromacro run``: a shipped config cut to some cells.

    Attributes
    ----------
    config : str
        The shipped config, relative to the repository.
    keep : dict
        Grid factor -> the levels kept (each must be one of the config's levels).
    replications : int
        Replications per cell.
    methods_from : str or None
        A shipped config whose method list replaces this one's (every method where it
        applies, not only those the study itself ran).
    methods : tuple of str, optional
        A method list that replaces the config's (a method outside the seed study).
    """

    config: str
    keep: dict[str, list[Any]] = field(default_factory=dict)
    replications: int = 1000
    methods_from: str | None = None
    methods: tuple[str, ...] | None = None


#: The seed study: its ten methods are the "every method" of the equivalence rule.
SEED_STUDY = "configs/clark2020.yaml"

RUN_CORPORA: dict[str, RunCorpus] = {
    "clark2020_row16": RunCorpus("configs/clark2020.yaml", {"sigma2_nu": [9]}, 1000),
    "fjk2018_balanced_g30": RunCorpus("configs/fjk2018.yaml",
                                      {"n_groups": [30], "group_size": [10]}, 1000,
                                      methods_from=SEED_STUDY),
    "cv2007": RunCorpus("configs/cv2007.yaml", {}, 200, methods_from=SEED_STUDY),
    # unequal groups and absent members (since 0.4.0): the example studies' cells with
    # every method
    "missing_members": RunCorpus("configs/examples/missing.yaml", {}, 200,
                                 methods_from=SEED_STUDY),
    "group_sizes": RunCorpus("configs/examples/group_sizes.yaml", {}, 200,
                             methods_from=SEED_STUDY),
    # tspa (since 0.6.0): balanced groups (its closed form) and unequal sizes (Newton)
    "tspa": RunCorpus("configs/examples/group_sizes.yaml", {}, 500,
                      methods=("tspa", "unadjusted")),
}
CROSSCHECK = "crosscheck"
CORPORA = (*RUN_CORPORA, CROSSCHECK)

#: Pinned copy of ``tools/crosscheck_r.py`` (seed, designs in seed order, method list);
#: a test holds the two equal. A copy, not an import: that script puts this repository
#: first on sys.path and imports the package at import time, while the worker of one side
#: must import only the package of the checkout it compares.
CROSSCHECK_SEED = 20240612
CROSSCHECK_DATASETS = 25
CROSSCHECK_DESIGNS: dict[str, dict[str, Any]] = {
    "balanced": dict(n_groups=100, group_size=10, icc=0.2, r_zxi=0.3),
    "unbalanced": dict(n_groups=60, group_size={"uniform": [3, 15]}, icc=0.2, r_zxi=0.3),
    "several_z": dict(n_groups=60, group_size=5, icc=0.2, r_zxi=[0.3, 0.2], n_z=2),
    "low_icc": dict(n_groups=50, group_size=10, icc=0.05, r_zxi=0.3),
}
CROSSCHECK_METHODS: dict[str, str | dict[str, Any]] = {
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


def derive_config(root: Path, name: str, *, quick: bool, n_jobs: int) -> dict[str, Any]:
    """The config of run corpus ``name``: the shipped config cut to the corpus' cells.

    Parameters
    ----------
    root : Path
        Repository whose ``configs/`` folder holds the shipped configs.
    name : str
        A key of :data:`RUN_CORPORA`.
    quick : bool
        Cut every cell to :data:`QUICK_REPLICATIONS` replications.
    n_jobs : int
        Worker processes of the run (results do not depend on it).

    Returns
    -------
    dict
        The config mapping, without ``output`` (the run gets ``--output``).

    Raises
    ------
    ValueError
        A kept level is not a level of the shipped config's grid.
    """
    corpus = RUN_CORPORA[name]
    raw = yaml.safe_load((root / corpus.config).read_text(encoding="utf-8"))
    grid = dict(raw.get("grid") or {})
    for factor, levels in corpus.keep.items():
        missing = [v for v in levels if v not in grid.get(factor, [])]
        if missing:
            raise ValueError(f"{corpus.config}: grid.{factor} has no level {missing}")
        grid[factor] = list(levels)
    raw["grid"] = grid
    if corpus.methods_from is not None:
        seed = yaml.safe_load((root / corpus.methods_from).read_text(encoding="utf-8"))
        raw["methods"] = list(seed["methods"])
    if corpus.methods is not None:
        raw["methods"] = list(corpus.methods)
    raw["replications"] = QUICK_REPLICATIONS if quick else corpus.replications
    raw["n_jobs"] = int(n_jobs)
    raw.pop("output", None)
    return raw


# ---------------------------------------------------------------- worker side (child)


def _digest(data: Any) -> str:
    """SHA-256 (16 hex digits) of a dataset's groups, x, y and z."""
    h = hashlib.sha256()
    for arr in (data.group, data.x, data.y, data.z):
        h.update(np.ascontiguousarray(arr, dtype=float).tobytes())
    return h.hexdigest()[:16]


def _neg_loglik(fit: Any, n_persons: int) -> float:
    """Minus the log-likelihood per person a fit reports in its extras (NaN: none)."""
    ll = fit.extras.get("loglik") if hasattr(fit, "extras") else None
    try:
        value = float(ll)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return -value / n_persons if math.isfinite(value) else math.nan


def _cfa_fmin(wides: list[np.ndarray]) -> np.ndarray:
    """The free-loading CFA's fmin of each wide matrix (NaN when not available)."""
    try:
        from micromacro_sim.models.cfa import fit_cfa_batch
    except ImportError:
        return np.full(len(wides), np.nan)
    return np.asarray(fit_cfa_batch(np.stack(wides)).fmin, dtype=float)


def _read_shards(folder: Path) -> pd.DataFrame:
    """Every Parquet shard under ``folder`` (temporary files end in .tmp: not read)."""
    frames = [pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))]
    return pd.concat(frames, ignore_index=True)


def _loglik_specs(cfg: Any, data: Any) -> list[Any]:
    """The config's methods (other than factor_score) whose fit reports a log-likelihood."""
    from micromacro_sim.api import fit_dataset

    out = []
    for spec in cfg.methods:
        if spec.method == "factor_score":
            continue
        fit = fit_dataset(data, [spec.to_config()])[0]
        if math.isfinite(_neg_loglik(fit, data.n_persons)):
            out.append(spec)
    return out


def _cell_objectives(cfg: Any, scenario: Any, reps: np.ndarray,
                     redraws: np.ndarray) -> pd.DataFrame:
    """Per replication of one cell: data digest and each method's discrepancy.

    The kept dataset is regenerated from its stream (attempt = ``redraws``). Rows:
    replication, method, kind, discrepancy; the digest under method ``""``.
    """
    from micromacro_sim.api import fit_dataset
    from micromacro_sim.dgp import generate
    from micromacro_sim.seeding import replication_rng

    cfa_labels = [m.label for m in cfg.methods if m.method == "factor_score"]
    if cfg.policy.gate in CFA_GATES:
        cfa_labels.append(f"gate:{cfg.policy.gate}")
    rows: list[dict[str, Any]] = []
    specs: list[Any] | None = None
    for start in range(0, len(reps), CHUNK):
        part = list(zip(reps[start:start + CHUNK], redraws[start:start + CHUNK], strict=True))
        datas = [generate(scenario, replication_rng(cfg.seed, scenario, int(r), int(a)))
                 for r, a in part]
        if specs is None:
            specs = _loglik_specs(cfg, datas[0])
        rows += [dict(replication=int(r), method="", kind="digest", discrepancy=math.nan,
                      digest=_digest(d)) for (r, _), d in zip(part, datas, strict=True)]
        if cfa_labels and datas[0].balanced and int(datas[0].sizes[0]) >= 3:
            fmin = _cfa_fmin([d.wide(0) for d in datas])
            rows += [dict(replication=int(r), method=label, kind=CFA_FMIN, discrepancy=f)
                     for label in cfa_labels for (r, _), f in zip(part, fmin, strict=True)]
        for spec in specs:
            for (r, _), d in zip(part, datas, strict=True):
                fit = fit_dataset(d, [spec.to_config()])[0]
                rows.append(dict(replication=int(r), method=spec.label, kind=NEG_LOGLIK,
                                 discrepancy=_neg_loglik(fit, d.n_persons)))
    return pd.DataFrame(rows)


def _verdict_rows(est: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, replication, method) of an estimates table."""
    cols = ["scenario", "replication", "method", "status", "reason_code", "converged",
            "admissible"]
    return est[cols].drop_duplicates(["scenario", "replication", "method"])


def _gate_rows(ds: pd.DataFrame, gate: str) -> pd.DataFrame:
    """The gate's verdict per (cell, replication) as rows of method ``gate:<gate>``."""
    out = ds[["scenario", "replication", "redraws"]].copy()
    out["method"] = f"gate:{gate}"
    out["status"] = np.where(ds["gate_passed"].astype(bool), "passed", "failed")
    out["reason_code"] = ds["gate_reason"].fillna("").astype(str)
    return out


def collect_run(name: str, config: Path, run_dir: Path) -> dict[str, pd.DataFrame]:
    """Tabulate one run corpus from its run folder (verdicts, estimates, datasets).

    Parameters
    ----------
    name : str
        The corpus.
    config : Path
        The derived config the run used.
    run_dir : Path
        The run folder ``micromacro run`` wrote.

    Returns
    -------
    dict of DataFrame
        ``verdicts`` (per cell, replication and method: status, reason code, converged,
        admissible, redraws for the gate rows, discrepancy and its kind), ``estimates``
        (per term: estimate and SEs) and ``datasets`` (per replication: redraws, gate
        verdict, data digest).
    """
    from micromacro_sim.config import load_config

    cfg = load_config(config)
    est = _read_shards(run_dir / "estimates").drop_duplicates(
        ["scenario", "replication", "method", "term"])
    ds = _read_shards(run_dir / "datasets").drop_duplicates(["scenario", "replication"])
    verdicts = _verdict_rows(est)
    if cfg.policy.gate != "none":
        verdicts = pd.concat([verdicts, _gate_rows(ds, cfg.policy.gate)], ignore_index=True)
    by_key = {sc.key: sc for sc in cfg.scenarios}
    objectives, digests = [], []
    for key, part in ds.sort_values(["scenario", "replication"]).groupby("scenario"):
        obj = _cell_objectives(cfg, by_key[str(key)], part["replication"].to_numpy(),
                               part["redraws"].to_numpy())
        obj["scenario"] = key
        digests.append(obj.loc[obj["kind"] == "digest", ["scenario", "replication", "digest"]])
        objectives.append(obj.loc[obj["kind"] != "digest"].drop(columns="digest",
                                                                 errors="ignore"))
    obj = pd.concat(objectives, ignore_index=True)
    verdicts = verdicts.merge(obj, on=["scenario", "replication", "method"], how="left")
    datasets = ds[["scenario", "replication", "redraws", "gate_passed", "gate_reason"]]
    datasets = datasets.merge(pd.concat(digests), on=["scenario", "replication"], how="left")
    labels = pd.read_parquet(run_dir / "scenarios.parquet")[["scenario", "label"]]
    return _finish(name, labels, verdicts, est[["scenario", "replication", "method", "term",
                                                *VALUE_COLUMNS]], datasets)


def _finish(name: str, labels: pd.DataFrame, verdicts: pd.DataFrame, estimates: pd.DataFrame,
            datasets: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rename ``scenario`` to ``cell``, add the corpus and cell label, fix column types."""
    labels = labels.rename(columns={"scenario": "cell", "label": "cell_label"})
    out = {}
    for key, frame in (("verdicts", verdicts), ("estimates", estimates),
                       ("datasets", datasets)):
        frame = frame.rename(columns={"scenario": "cell"}).merge(labels, on="cell", how="left")
        frame.insert(0, "corpus", name)
        out[key] = frame
    v = out["verdicts"]
    for col in ("kind", "reason_code"):
        v[col] = v[col].fillna("").astype(str) if col in v else ""
    v["discrepancy"] = v["discrepancy"].astype(float) if "discrepancy" in v else math.nan
    v["redraws"] = (v["redraws"] if "redraws" in v else pd.Series(np.nan, index=v.index)
                    ).astype("Int64")
    for col in ("converged", "admissible"):
        v[col] = v[col].astype("boolean")
    return out


def _crosscheck_draw(design: str, i: int) -> Any:
    """Dataset ``i`` of a cross-check design, from its own seed (as tools/crosscheck_r.py)."""
    from micromacro_sim.dgp import generate
    from micromacro_sim.scenario import Scenario

    k = list(CROSSCHECK_DESIGNS).index(design)
    rng = np.random.default_rng(np.random.SeedSequence([CROSSCHECK_SEED, k, i]))
    return generate(Scenario.from_params(CROSSCHECK_DESIGNS[design]), rng)


def _crosscheck_frame(data: Any) -> pd.DataFrame:
    """Long frame: group, member (position in the group), x, y, z1..zq."""
    g = data.group
    df = pd.DataFrame({"group": g, "member": data.position, "x": data.x[:, 0], "y": data.y[g]})
    for j in range(data.n_z):
        df[f"z{j + 1}"] = data.z[g, j]
    return df


def _crosscheck_fits(data: Any) -> dict[str, Any]:
    """Every cross-check method's FitResult on one dataset (``true`` on the true xi)."""
    import micromacro_sim as mm
    from micromacro_sim.api import fit_dataset

    frame = _crosscheck_frame(data)
    zs = [c for c in frame.columns if c.startswith("z")]
    res = mm.fit(frame, group="group", x="x", z=zs, y="y", member="member",
                 method=[{k: v} if isinstance(v, dict) else {k: {"method": v}}
                         for k, v in CROSSCHECK_METHODS.items()])
    return {"true": fit_dataset(data, ["true"])[0],
            **{m: res[m].fit for m in CROSSCHECK_METHODS}}


def _fit_rows(cell: str, i: int, label: str, fit: Any, disc: tuple[str, float]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The verdict row and the estimate rows of one FitResult."""
    verdict = dict(scenario=cell, replication=i, method=label, status=fit.status.value,
                   reason_code=fit.reason_code or "", converged=bool(fit.converged),
                   admissible=bool(fit.admissible), kind=disc[0], discrepancy=disc[1])
    params = np.asarray(fit.params, dtype=float)
    est = []
    for t, term in enumerate(fit.terms if params.size else ()):
        row = dict(scenario=cell, replication=i, method=label, term=term,
                   estimate=float(params[t]))
        for se_type, col in SE_COLUMNS.items():
            se = fit.bse.get(se_type)
            row[col] = float(se[t]) if se is not None else math.nan
        est.append(row)
    return verdict, est


def collect_crosscheck(n_datasets: int) -> dict[str, pd.DataFrame]:
    """Tabulate the cross-check corpus: every design's first ``n_datasets`` datasets.

    Discrepancies: factor_score's CFA fmin on the wide matrix, and minus the
    log-likelihood per person where a fit reports one (blup, blup_hetvar, sem_2level).

    Returns
    -------
    dict of DataFrame
        As :func:`collect_run` (no gate rows; ``redraws`` 0).
    """
    verdicts, estimates, datasets = [], [], []
    for design in CROSSCHECK_DESIGNS:
        for i in range(n_datasets):
            data = _crosscheck_draw(design, i)
            balanced = bool(data.balanced) and int(data.sizes[0]) >= 3
            fmin = float(_cfa_fmin([data.wide(0)])[0]) if balanced else math.nan
            datasets.append(dict(scenario=design, replication=i, redraws=0, gate_passed=True,
                                 gate_reason="", digest=_digest(data)))
            for label, fit in _crosscheck_fits(data).items():
                disc = ((CFA_FMIN, fmin) if label == "factor_score"
                        else (NEG_LOGLIK, _neg_loglik(fit, data.n_persons)))
                if not math.isfinite(disc[1]):
                    disc = ("", math.nan)
                v, e = _fit_rows(design, i, label, fit, disc)
                verdicts.append(v)
                estimates += e
    labels = pd.DataFrame({"scenario": list(CROSSCHECK_DESIGNS),
                           "label": [f"{d} {p}" for d, p in CROSSCHECK_DESIGNS.items()]})
    return _finish(CROSSCHECK, labels, pd.DataFrame(verdicts), pd.DataFrame(estimates),
                   pd.DataFrame(datasets))

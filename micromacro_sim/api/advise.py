"""``advise``: from a researcher's dataset to a defensible method choice.

1. Read the data as :func:`~micromacro_sim.api.fitting.fit` does, rows put in a canonical
   order first (group id, member, values), so no result depends on the order of the rows.
2. Fit the population model (``sem_2level``, :mod:`.advise_population`) and map it onto the
   generator's parametrisation.
3. Build the design around it (:mod:`.advise_design`): the data's group sizes, absent
   members by the roster rule, ICC x b_xi band; saved as a config ``micromacro run`` reads.
4. Run every applicable method through the package's run machinery (the time estimated
   from a pilot of the fitted cell first, progress on stderr).
5. Summarize and rank the methods (:mod:`.advise_rank`), recommend one with its reasons.
6. End with the recommended method's fit of the data (:mod:`.advise_report` writes it all).
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.api.advise_design import Cell, Roster, build_config, cells, config_text, roster
from micromacro_sim.api.advise_methods import (
    mcmc_methods,
    method_candidates,
    probe_design,
    screen_methods,
)
from micromacro_sim.api.advise_population import Population, fit_population
from micromacro_sim.api.advise_rank import Ranking, rank_methods
from micromacro_sim.api.advise_report import ReportParts, compact_text, markdown
from micromacro_sim.api.fitresult import MethodResult
from micromacro_sim.api.fitting import fit
from micromacro_sim.api.userdata import UserDataset, prepare, read_table_file
from micromacro_sim.core.errors import ConfigError, DataError
from micromacro_sim.design.config import MethodSpec

__all__ = ["DEFAULT_REPLICATIONS", "DEFAULT_SEED", "Advice", "advise"]

DEFAULT_SEED = 20261208
DEFAULT_REPLICATIONS = 500
#: Fewest replications per cell (the coverage MCSE is .07 at 10).
MIN_REPLICATIONS = 10
#: Share and least number of the fitted cell's replications that time the run before it
#: starts (kept: they are the cell's first replications).
PILOT_SHARE, PILOT_MIN = 5, 10
_REFERENCE = MethodSpec("true", "true")


@dataclass(frozen=True)
class Advice:
    """What :func:`advise` found.

    Attributes
    ----------
    population : Population
        The population model in the generator's parametrisation.
    roster : Roster
        Group sizes and absent members of the design.
    config : dict
        The design's config (``design.yaml``).
    cells : list of Cell
    performance : DataFrame
        The summary's performance table of the design's cells.
    ranking : Ranking
        The methods ranked, the recommendation and its reasons.
    fit : MethodResult
        The recommended (or least bad) method's fit of the data.
    excluded : dict of str -> str
        Methods not compared and why.
    report : str
        ``advice.md``.
    text : str
        The compact report (what the command line prints).
    output : Path or None
        The folder written (None: nothing was written).
    """

    population: Population
    roster: Roster
    config: dict[str, Any]
    cells: list[Cell]
    performance: pd.DataFrame
    ranking: Ranking
    fit: MethodResult
    excluded: dict[str, str]
    report: str
    text: str
    output: Path | None = None

    @property
    def recommended(self) -> str | None:
        """The recommended method (None when no method holds its level on the design)."""
        return self.ranking.recommended

    def __str__(self) -> str:
        return self.text


# ---------------------------------------------------------------------------- input
def _integer(v: object) -> int | None:
    """``v`` as an int when it is an integer (not a bool), else None."""
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def _check_options(replications: object, seed: object, n_jobs: object) -> None:
    reps, root, jobs = _integer(replications), _integer(seed), _integer(n_jobs)
    if reps is None or reps < MIN_REPLICATIONS:
        raise ConfigError(f"replications: expected an integer >= {MIN_REPLICATIONS}, got "
                          f"{replications!r}")
    if root is None or root < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    if jobs is None or (jobs < 1 and jobs != -1):
        raise ConfigError(f"n_jobs: expected a positive integer or -1, got {n_jobs!r}")


def _columns(x: str | Sequence[str], z: str | Sequence[str] | None) -> tuple[str, list[str]]:
    xs = [c.strip() for c in x.split(",") if c.strip()] if isinstance(x, str) else list(x)
    zs = ([c.strip() for c in z.split(",") if c.strip()] if isinstance(z, str)
          else list(z or []))
    if len(xs) != 1:
        raise DataError(f"x: advise takes one member-level column, got {','.join(xs)!r}")
    if not zs:
        raise DataError("z: advise needs at least one group-level covariate column")
    return xs[0], zs


def _canonical(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The used columns with the rows in one order whatever the input order: by every
    column's text (group id, member, then the values); equal rows are interchangeable."""
    text = frame[cols].astype(str)
    order = np.lexsort([text[c].to_numpy() for c in reversed(cols)])
    return frame[cols].iloc[order].reset_index(drop=True)


def _read(data: str | os.PathLike[str] | pd.DataFrame, group: str,
          member: str | None) -> tuple[pd.DataFrame, str]:
    if isinstance(data, pd.DataFrame):
        return data, ""
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(f"data: expected a file path or a pandas DataFrame, got a "
                        f"{type(data).__name__}")
    return read_table_file(data, labels=[group, member]), Path(data).name


# ---------------------------------------------------------------------------- the run
def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _run(raw: dict[str, Any], pilot: dict[str, Any], run_dir: Path, n_jobs: int,
         say: Callable[[str], None], progress: bool, overwrite: bool) -> None:
    """The pilot, then every cell, in one run folder (the pilot's replications are kept).

    The pilot runs the fitted cell thrice: one replication (imports and first calls), then
    one more (a run's fixed cost plus one replication), then a fifth of the cell more (the
    batched methods pay per task: small batches understate the cost); their times
    give the fixed cost (paid per task: at least one per cell) and the cost per
    replication, hence the estimate (one worker)."""
    from micromacro_sim.api.simulation import simulate

    reps = int(raw["replications"])
    total = reps * int(np.prod([len(v) for v in raw.get("grid", {}).values()]))
    k = min(reps - 2, max(PILOT_MIN, reps // PILOT_SHARE))
    seconds = []
    for n in (1, 2, 2 + k):
        t0 = time.perf_counter()
        simulate({**pilot, "replications": n}, output=run_dir, progress=False, n_jobs=n_jobs,
                 overwrite=overwrite and n == 1)
        seconds.append(time.perf_counter() - t0)
    per = max(0.0, (seconds[2] - seconds[1]) / (k - 1))
    fixed = max(0.0, seconds[1] - per)
    cells = max(1, total // reps)  # a task per cell at least, each with its fixed cost
    say(f"estimated time: about {_clock(fixed * cells + per * (total - 2 - k))} for {total} "
        f"replications of {len(raw['methods'])} methods on one worker (pilot: {2 + k} "
        f"replications of the fitted cell, {1000 * per:.0f} ms each)")
    simulate(raw, output=run_dir, progress=progress, n_jobs=n_jobs)


def _performance(run_dir: Path, reps: int, keys: list[str]) -> pd.DataFrame:
    from micromacro_sim.summaries.summarize import summarize_run

    return summarize_run(run_dir, alpha=0.05, replications=reps, scenarios=keys).performance


# ---------------------------------------------------------------------------- advise
@dataclass(frozen=True)
class _Inputs:
    frame: pd.DataFrame
    data: UserDataset
    cols: dict[str, Any]
    name: str
    notes: tuple[str, ...] = ()


def _inputs(data: Any, group: str, x: Any, z: Any, y: str, member: str | None) -> _Inputs:
    xcol, zs = _columns(x, z)
    frame, name = _read(data, group, member)
    cols = {"group": group, "x": xcol, "y": y, "z": zs, "member": member}
    prepare(frame, **cols)  # every data error, named, before the order is touched
    used = [group, *([member] if member else []), xcol, y, *zs]
    frame = _canonical(frame, used)
    prep = prepare(frame, **cols)
    return _Inputs(frame, prep.data, cols, name, prep.notes)


def _command(inp: _Inputs, method: str) -> str:
    c = inp.cols
    parts = ["micromacro", "fit", inp.name or "DATA.csv", "--group", c["group"],
             *(["--member", c["member"]] if c["member"] else []), "--x", c["x"],
             "--z", ",".join(c["z"]), "--y", c["y"], "--method", method]
    return " ".join(shlex.quote(p) for p in parts)


def _output(output: str | os.PathLike[str] | None, name: str, data: Any) -> Path | None:
    if output is None:
        return None
    from micromacro_sim.run.paths import check_not_input, check_output_dir

    out = check_output_dir(output)
    if not isinstance(data, pd.DataFrame):
        check_not_input([out / f for f in ("advice.md", "design.yaml", "ranking.csv")],
                        [data], inside=False)
    return out


def advise(
    data: str | os.PathLike[str] | pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    z: str | Sequence[str],
    y: str,
    member: str | None = None,
    methods: str | Sequence[str] | None = None,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = DEFAULT_SEED,
    output: str | os.PathLike[str] | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> Advice:
    """Recommend a method for a dataset by simulating the design its population model implies.

    Parameters
    ----------
    data : path or DataFrame
        A CSV (or Parquet) file or a long DataFrame, one row per member.
    group, y : str
        Group id column and group-level outcome.
    x : str
        The member-level column (one).
    z : str or list of str
        Group-level covariate column(s) (at least one).
    member : str, optional
        Member id column: needed by the methods that treat members as indicators, and the
        only way absent members are recognised (the roster rule, :mod:`.advise_design`).
    methods : str or list of str, optional
        Methods to compare (names or a config's ``methods:`` entries); default
        :func:`~.advise_design.default_methods` (no MCMC). ``true`` always runs as a
        reference.
    replications : int
        Replications per cell (at least 10).
    seed : int
        Root seed of the design's config.
    output : path, optional
        Folder for ``advice.md``, ``design.yaml``, ``ranking.csv`` and the run folder
        ``run/``; None writes nothing (the run lives in a temporary folder).
    n_jobs : int
        Workers of the run (results do not depend on it).
    progress : bool
        The run's progress on stderr.
    log : callable, optional
        Receives the notes and the time estimate (one line each).
    overwrite : bool
        Discard a run of another config (other methods) in ``output/run``.

    Returns
    -------
    Advice

    Raises
    ------
    DataError, ConfigError
        Bad data or options, one line naming the field and the value, before anything is
        written.
    """
    say = log or (lambda text: None)
    _check_options(replications, seed, n_jobs)
    inp = _inputs(data, group, x, z, y, member)
    out = _output(output, inp.name, data)
    pop = fit_population(inp.data)
    for note in (*inp.notes, *pop.notes):
        say(f"note: {note}")
    ros = roster(inp.data)
    opts = {"seed": int(seed), "replications": int(replications)}
    kept, excluded = _methods(inp, pop, ros, methods, opts)
    specs = [_REFERENCE, *kept]
    raw = build_config(pop, ros, specs, **opts)
    pilot = build_config(pop, ros, specs, fitted_only=True, **opts)
    return _finish(inp, pop, ros, raw, pilot, kept, excluded, out, int(n_jobs), say, progress,
                   overwrite)


def _methods(inp: _Inputs, pop: Population, ros: Roster, methods: str | Sequence[str] | None,
             opts: dict[str, int]) -> tuple[list[MethodSpec], dict[str, str]]:
    """The methods compared, and the others with why (:mod:`.advise_methods`)."""
    kept, excluded = screen_methods(inp.frame, method_candidates(methods), inp.cols)
    if methods is None:
        excluded = {**{m: "MCMC (seconds per replication): name it in --methods to compare it"
                       for m in mcmc_methods()}, **excluded}
    cell = build_config(pop, ros, [_REFERENCE, *kept], fitted_only=True, **opts)
    probe = probe_design(cell, kept)
    excluded.update(probe)
    kept = [s for s in kept if s.label not in probe]
    if not kept:
        raise DataError("methods: no method can be compared on these data ("
                        + "; ".join(f"{m}: {w}" for m, w in excluded.items()) + ")")
    return kept, excluded


def _finish(inp: _Inputs, pop: Population, ros: Roster, raw: dict[str, Any],
            pilot: dict[str, Any], kept: list[MethodSpec], excluded: dict[str, str],
            out: Path | None, n_jobs: int, say: Callable[[str], None],
            progress: bool, overwrite: bool) -> Advice:
    """Save the design, run it, rank, fit, and write the report."""
    from micromacro_sim.estimators import method_class
    from micromacro_sim.run.atomic import write_text
    from micromacro_sim.run.configure import load_config

    text = config_text(raw)
    with tempfile.TemporaryDirectory(prefix="micromacro-advise-") as tmp:
        write_text(Path(tmp) / "design.yaml", text)
        cfg = load_config(Path(tmp) / "design.yaml")  # what `micromacro run` reads
        design = cells(cfg, pop)
        run_dir = (out if out is not None else Path(tmp)) / "run"
        _run(raw, pilot, run_dir, n_jobs, say, progress, overwrite)
        perf = _performance(run_dir, cfg.replications, [c.key for c in design])
    zs = dict(zip(cfg.scenarios[0].z_names, pop.z_names, strict=True))
    ranking = rank_methods(perf, design, [s.label for s in kept], zs)
    spec = next(s for s in kept if s.label == ranking.choice)
    res = fit(inp.frame, method=[spec.to_config()],
              cov_type=method_class(spec.method).default_se, **inp.cols)[spec.label]
    parts = ReportParts(
        columns={"data": inp.name, **{k: (",".join(v) if isinstance(v, list) else v or "")
                                      for k, v in inp.cols.items()}},
        n_groups=inp.data.n_groups, n_persons=inp.data.n_persons, population=pop, roster=ros,
        cells=design, seed=cfg.seed, replications=cfg.replications,
        compared=[s.label for s in kept], excluded=excluded, ranking=ranking, fit=res,
        command=_command(inp, spec.label), notes=inp.notes)
    advice = Advice(pop, ros, raw, design, perf, ranking, res, excluded, markdown(parts),
                    compact_text(parts), out)
    if out is not None:
        write_text(out / "design.yaml", text)
        write_text(out / "advice.md", advice.report)
        write_text(out / "ranking.csv", ranking.table.to_csv(index=False, float_format="%.6g"))
    return advice

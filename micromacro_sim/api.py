"""Fit micro-macro models to one dataset (a user's table or a simulated draw)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dataset import Dataset
from .errors import DataError
from .estimators import SE_TYPES, FitResult, available, get_estimator, registry
from .schema import SE_COLUMNS
from .status import Status
from .userdata import prepare

__all__ = [
    "Comparison",
    "MicroMacroResult",
    "Reliability",
    "default_methods",
    "fit",
    "fit_dataset",
    "fit_frame",
    "reliability",
    "results_table",
]


def default_methods() -> list[str]:
    """Every registered method that works on real data (all but the simulation oracle)."""
    return [m for m in available() if not registry()[m].needs_truth]


def fit_dataset(data: Dataset, methods: Sequence[str] | None = None) -> list[FitResult]:
    """Fit each method to ``data`` (unknown names raise :class:`DataError`)."""
    names = list(methods) if methods else default_methods()
    for m in names:
        if m not in registry():
            raise DataError(f"method: unknown method {m!r} (known: {', '.join(available())})")
    return [get_estimator(m).fit(data) for m in names]


def results_table(results: Sequence[FitResult]) -> pd.DataFrame:
    """Long table: method, term, estimate, se, se_HC0..se_HC3, converged, admissible, reason."""
    rows = []
    for r in results:
        for i, term in enumerate(r.terms):
            row = {"method": r.method, "term": term, "estimate": r.params[i]}
            for t, col in SE_COLUMNS.items():
                row[col] = r.se(t)[i]
            row.update(converged=r.converged, admissible=r.admissible, status=r.status.value,
                       reason_code=r.reason_code, reason=r.reason)
            rows.append(row)
    out = pd.DataFrame(rows)
    num = ["estimate", *SE_COLUMNS.values()]
    out[num] = out[num].astype(float).where(np.isfinite(out[num].astype(float)))
    return out


def fit_frame(
    frame: pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    y: str,
    z: str | Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...], Reliability]:
    """Prepare a long DataFrame and fit ``methods``.

    Returns
    -------
    table, notes, reliability
        The long results table (see :func:`results_table`), notes on dropped rows and
        skipped methods, and the reliability of the group means.
    """
    prep = prepare(frame, group=group, x=x, y=y, z=z)
    results, notes = [], list(prep.notes)
    for r in fit_dataset(prep.data, methods):
        if r.status is Status.NOT_APPLICABLE:
            notes.append(f"{r.method} skipped: {r.reason}")
        else:
            results.append(r)
    if not results:
        raise DataError("method: no requested method applies to this dataset ("
                        + "; ".join(notes) + ")")
    return results_table(results), tuple(notes), reliability(prep.data)


#: ICC(2) below this is "low reliability": group means are noticeably attenuated.
LOW_RELIABILITY = 0.7


@dataclass(frozen=True)
class Reliability:
    """Reliability of the group means of each x.

    Attributes
    ----------
    table : DataFrame
        One row per x: ICC(1), ICC(2) (reliability of a group mean), coefficient alpha
        raw and standardized (balanced groups only), mean group size.
    """

    table: pd.DataFrame

    @property
    def low(self) -> list[str]:
        """x variables whose group means have ICC(2) below :data:`LOW_RELIABILITY`."""
        t = self.table
        return list(t.index[t["icc2"] < LOW_RELIABILITY])

    def warning(self) -> str:
        """A warning sentence when some group mean is unreliable, else ""."""
        low = self.low
        if not low:
            return ""
        vals = ", ".join(f"{v} {self.table.loc[v, 'icc2']:.2f}" for v in low)
        return (f"low reliability of group means (ICC(2): {vals}; below {LOW_RELIABILITY}): "
                "the group-mean coefficient is attenuated and Z's coefficient absorbs part of it "
                "when Z correlates with the construct; prefer a latent method (croon, sem, "
                "sem_2level) or report them side by side")


def reliability(data: Dataset) -> Reliability:
    """ICC(1), ICC(2) and (balanced groups) coefficient alpha of every x."""
    from .reliability import anova, coefficient_alpha

    a = anova(data)
    rows = []
    for j, name in enumerate(data.x_names):
        alpha_raw = alpha_std = np.nan
        if data.balanced and data.sizes[0] >= 2:
            alpha_raw, alpha_std = coefficient_alpha(data.wide(j))
        rows.append({"variable": name, "icc1": a.icc1[j], "icc2": a.icc2[j], "alpha_raw": alpha_raw,
                     "alpha_std": alpha_std, "mean_group_size": float(data.sizes.mean())})
    return Reliability(pd.DataFrame(rows).set_index("variable"))


@dataclass(frozen=True)
class MicroMacroResult:
    """One method fitted to one dataset, in the style of a statsmodels result.

    Attributes
    ----------
    fit : FitResult
        The underlying immutable result (all SE types).
    cov_type : str
        SE type used by :attr:`bse`, :meth:`conf_int` and :attr:`pvalues`.
    n_groups, n_persons : int
    scores : Series or None
        Estimated group scores (two-step methods), indexed by group label.
    reliability : Reliability
    notes : tuple of str
    """

    fit: FitResult
    cov_type: str
    n_groups: int
    n_persons: int
    scores: pd.Series | None
    reliability: Reliability
    notes: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        """Method label."""
        return self.fit.method

    @property
    def nobs(self) -> dict[str, int]:
        """Numbers of groups and persons."""
        return {"groups": self.n_groups, "persons": self.n_persons}

    @property
    def params(self) -> pd.Series:
        """Estimates by term."""
        return pd.Series(self.fit.params, index=list(self.fit.terms), name=self.method)

    @property
    def bse(self) -> pd.Series:
        """Standard errors of :attr:`cov_type` by term."""
        return pd.Series(self.fit.se(self.cov_type), index=list(self.fit.terms), name="se")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values (t with the residual df for two-step methods, else normal)."""
        return pd.Series(self.fit.pvalues(self.cov_type), index=list(self.fit.terms))

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Confidence limits by term."""
        ci = self.fit.conf_int(alpha, self.cov_type)
        return pd.DataFrame(ci, index=list(self.fit.terms), columns=["lower", "upper"])

    def table(self) -> pd.DataFrame:
        """Coefficient table: estimate, SE, statistic, p-value, 95% limits."""
        ci = self.conf_int()
        return pd.DataFrame({
            "estimate": self.params, "se": self.bse, "z_or_t": self.params / self.bse,
            "p": self.pvalues, "lower": ci["lower"], "upper": ci["upper"],
        })

    def summary(self) -> str:
        """A printable summary in the style of statsmodels."""
        f = self.fit
        inference = (f"t({f.df_resid:g})" if f.df_resid is not None else "normal")
        head = [
            f"micro-macro model: {self.method}",
            f"groups: {self.n_groups}   persons: {self.n_persons}   SE: {self.cov_type}   "
            f"inference: {inference}",
            f"status: {'ok' if f.ok else 'FLAGGED: ' + (f.reason or 'inadmissible')}",
        ]
        if f.two_step:
            head.append("two-step: SEs treat the estimated scores as known (first-step "
                        "uncertainty ignored)")
        body = self.table().to_string(float_format=lambda v: f"{v:.4f}")
        rel = self.reliability.table.to_string(float_format=lambda v: f"{v:.3f}")
        lines = [*head, "", body, "", "reliability of the group means:", rel]
        warn = self.reliability.warning()
        lines += [f"warning: {warn}"] if warn else []
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """Several methods fitted to the same dataset."""

    results: tuple[MicroMacroResult, ...]

    def __getitem__(self, method: str) -> MicroMacroResult:
        for r in self.results:
            if r.method == method:
                return r
        raise KeyError(method)

    def table(self) -> pd.DataFrame:
        """Side by side: rows are terms, columns ``<method>`` and ``<method> se``."""
        cols = {}
        for r in self.results:
            cols[r.method] = r.params
            cols[f"{r.method} se"] = r.bse
        return pd.DataFrame(cols)

    def summary(self) -> str:
        """Printable comparison with reliability and flags."""
        first = self.results[0]
        lines = [f"micro-macro models: {first.n_groups} groups, {first.n_persons} persons, "
                 f"SE {first.cov_type} for two-step methods (model-based for one-step ones)", "",
                 self.table().to_string(float_format=lambda v: f"{v:.4f}"), ""]
        for r in self.results:
            if not r.fit.ok:
                lines.append(f"flagged: {r.method}: {r.fit.reason or 'inadmissible'}")
        lines += ["reliability of the group means:",
                  first.reliability.table.to_string(float_format=lambda v: f"{v:.3f}")]
        warn = first.reliability.warning()
        lines += [f"warning: {warn}"] if warn else []
        notes = dict.fromkeys(n for r in self.results for n in r.notes)
        lines += [f"note: {n}" for n in notes]
        return "\n".join(lines)


def fit(
    data: pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    y: str,
    z: str | Sequence[str] | None = None,
    method: str | Sequence[str] = "unadjusted",
    cov_type: str = "HC3",
) -> MicroMacroResult | Comparison:
    """Fit micro-macro model(s) to a long DataFrame (one row per member).

    Parameters
    ----------
    data : DataFrame
    group, y : str
        Group identifier and group-level outcome (constant within group).
    x : str or list of str
        Member-level variable(s), each aggregated to its own latent group mean.
    z : str or list of str, optional
        Group-level covariates (constant within group).
    method : str or list of str
        A registered method (``micromacro methods``) or several; several give a
        :class:`Comparison`.
    cov_type : {"classical", "HC0", "HC1", "HC2", "HC3"}
        SE type of two-step methods (one-step models report their model-based SE).

    Returns
    -------
    MicroMacroResult or Comparison
    """
    if cov_type not in SE_TYPES:
        raise DataError(f"cov_type: expected one of {', '.join(SE_TYPES)}, got {cov_type!r}")
    names = [method] if isinstance(method, str) else list(method)
    prep = prepare(data, group=group, x=x, y=y, z=z)
    d = prep.data
    rel = reliability(d)
    out = []
    for res in fit_dataset(d, names):
        notes = list(prep.notes)
        if res.status is Status.NOT_APPLICABLE:
            raise DataError(f"method: {res.method} cannot fit these data ({res.reason})")
        ct = cov_type if cov_type in res.bse else "classical"
        if ct != cov_type:
            notes.append(f"{res.method} reports model-based (classical) SEs only")
        scores = None
        if "scores" in res.extras:
            vals = np.asarray(res.extras["scores"])
            vals = vals[:, 0] if vals.ndim == 2 and vals.shape[1] == 1 else vals
            if vals.ndim == 1:
                scores = pd.Series(vals, index=d.group_labels, name=f"{res.method} score")
        out.append(MicroMacroResult(fit=res, cov_type=ct, n_groups=d.n_groups,
                                    n_persons=d.n_persons, scores=scores, reliability=rel,
                                    notes=tuple(notes)))
    return out[0] if isinstance(method, str) else Comparison(tuple(out))

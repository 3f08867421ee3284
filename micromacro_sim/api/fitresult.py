"""Results of :func:`micromacro_sim.api.fitting`: one type, whatever the methods asked for.

:class:`MicroMacroResult` holds every requested method fitted to one dataset and is
indexed by method label; each entry is a :class:`MethodResult` in the style of a
statsmodels result (``params``, ``bse``, ``tvalues``, ``pvalues``, ``conf_int()``,
``cov_params()``, ``summary()``). Summaries are :class:`Summary` objects: ``print`` shows
text, Jupyter shows HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from micromacro_sim.core.results import SE_COLUMNS, SE_TYPES, FitResult
from micromacro_sim.core.status import Status
from micromacro_sim.models.jackknife import jackknife_cov
from micromacro_sim.models.ols import ols_cov

__all__ = [
    "LOW_RELIABILITY",
    "MethodResult",
    "MicroMacroResult",
    "Reliability",
    "Summary",
    "UnknownMethod",
    "ols_cov",
    "results_table",
]

#: ICC(2) below this is "low reliability": group means are noticeably attenuated.
LOW_RELIABILITY = 0.7


def _fmt(digits: int):
    return lambda v: f"{v:.{digits}f}"


@dataclass(frozen=True)
class Summary:
    """A printable summary: text for ``print`` and the console, HTML for Jupyter."""

    text: str
    html: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html

    def __contains__(self, part: str) -> bool:
        return part in self.text


def _html_block(title: str, head: Sequence[str], tables: Sequence[tuple[str, pd.DataFrame]],
                tail: Sequence[str]) -> str:
    parts = [f"<div class='micromacro-summary'><h4>{html.escape(title)}</h4>"]
    parts += [f"<p>{html.escape(h)}</p>" for h in head]
    for caption, frame in tables:
        parts.append(f"<p><b>{html.escape(caption)}</b></p>" if caption else "")
        parts.append(frame.to_html(float_format=_fmt(4), na_rep="", border=0))
    parts += [f"<p><i>{html.escape(t)}</i></p>" for t in tail]
    return "\n".join([*parts, "</div>"])


@dataclass(frozen=True)
class Reliability:
    """Reliability of the group means of each x.

    Attributes
    ----------
    table : DataFrame
        One row per x: ICC(1), ICC(2) (reliability of a group mean), coefficient alpha
        raw and standardized (balanced groups with identified members only), mean
        group size.
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


def results_table(results: Sequence[FitResult]) -> pd.DataFrame:
    """Long table: method, term, estimate, se, se_HC0..se_HC3, converged, admissible,
    status, reason_code, reason."""
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


@dataclass(frozen=True, eq=False)
class MethodResult:
    """One method fitted to one dataset, in the style of a statsmodels result.

    Attributes
    ----------
    fit : FitResult
        The underlying immutable result (all SE types, status and flags).
    cov_type : str
        SE type used by :attr:`bse`, :attr:`tvalues`, :meth:`conf_int`, :attr:`pvalues`
        and :meth:`cov_params` (one-step models: ``classical``, their model-based SE).
    n_groups, n_persons : int
    scores : Series or None
        Estimated group scores (two-step methods), indexed by group label.
    reliability : Reliability
    notes : tuple of str
    design, y : ndarray or None
        The second-step design [1, Z, scores] and outcome of a two-step method (used by
        :meth:`cov_params`).
    """

    fit: FitResult
    cov_type: str
    n_groups: int
    n_persons: int
    scores: pd.Series | None
    reliability: Reliability
    notes: tuple[str, ...] = ()
    design: np.ndarray | None = None
    y: np.ndarray | None = None

    @property
    def method(self) -> str:
        """Method label."""
        return self.fit.method

    @property
    def status(self) -> Status:
        """``ok``, ``flagged``, ``not_applicable`` or ``error``."""
        return self.fit.status

    @property
    def reason_code(self) -> str:
        """Code of the first flag ("" when ok)."""
        return self.fit.reason_code

    @property
    def reason(self) -> str:
        """Human text of every flag ("" when ok)."""
        return self.fit.reason

    @property
    def terms(self) -> list[str]:
        """Term names."""
        return list(self.fit.terms)

    @property
    def nobs(self) -> dict[str, int]:
        """Numbers of groups and persons."""
        return {"groups": self.n_groups, "persons": self.n_persons}

    @property
    def params(self) -> pd.Series:
        """Estimates by term."""
        return pd.Series(self.fit.params, index=self.terms, name=self.method)

    @property
    def bse(self) -> pd.Series:
        """Standard errors of :attr:`cov_type` by term."""
        return pd.Series(self.fit.se(self.cov_type), index=self.terms, name=self.method)

    @property
    def tvalues(self) -> pd.Series:
        """Estimates over their :attr:`cov_type` standard errors (z or t statistics)."""
        return pd.Series(self.fit.tvalues(self.cov_type), index=self.terms, name=self.method)

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values (t with the residual df for two-step methods, else normal)."""
        return pd.Series(self.fit.pvalues(self.cov_type), index=self.terms, name=self.method)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Confidence limits by term."""
        ci = self.fit.conf_int(alpha, self.cov_type)
        return pd.DataFrame(ci, index=self.terms, columns=["lower", "upper"])

    def cov_params(self, cov_type: str | None = None) -> pd.DataFrame:
        """Covariance matrix of the estimates (terms x terms).

        Two-step methods: the full covariance of the second-step OLS of the requested
        type (default :attr:`cov_type`; classical or HC0-HC3, treating the scores as
        known), or with ``JK`` (a method with ``se: jackknife``) the jackknife covariance of
        the delete-one-group refits; its diagonal is ``bse**2``. One-step models report
        standard errors only: the diagonal holds their model-based variances and the
        covariances are NaN (unknown, not zero). A fit without estimates gives all NaN.
        """
        ct = cov_type or self.cov_type
        if ct not in SE_TYPES:
            raise ValueError(f"cov_type: expected one of {', '.join(SE_TYPES)}, got {ct!r}")
        k = len(self.terms)
        deletions = self.fit.extras.get("jackknife")
        if ct == "JK" and deletions is not None:
            cov = jackknife_cov(np.asarray(deletions))
        elif ct != "JK" and self.design is not None and self.y is not None and np.all(
                np.isfinite(self.fit.params)):
            cov = ols_cov(self.y, self.design, ct)
        else:
            cov = np.full((k, k), np.nan)
            np.fill_diagonal(cov, self.fit.se(ct) ** 2)
        return pd.DataFrame(cov, index=self.terms, columns=self.terms)

    def table(self) -> pd.DataFrame:
        """Coefficient table: estimate, SE, statistic, p-value, 95% limits."""
        ci = self.conf_int()
        return pd.DataFrame({
            "estimate": self.params, "se": self.bse, "z_or_t": self.tvalues,
            "p": self.pvalues, "lower": ci["lower"], "upper": ci["upper"],
        })

    def _head(self) -> list[str]:
        f = self.fit
        inference = f"t({f.df_resid:g})" if f.df_resid is not None else "normal"
        status = ("ok" if f.ok else f"{f.status.value.upper()} [{f.reason_code}]: "
                  + (f.reason or "inadmissible"))
        head = [f"groups: {self.n_groups}   persons: {self.n_persons}   SE: {self.cov_type}   "
                f"inference: {inference}", f"status: {status}"]
        if f.two_step:
            head.append("two-step: SEs treat the estimated scores as known (first-step "
                        "uncertainty ignored)")
        return head

    def summary(self) -> Summary:
        """Coefficient table with status, reliability, warnings and notes."""
        title = f"micro-macro model: {self.method}"
        head, tail = self._head(), _tail(self.reliability, self.notes)
        rel = self.reliability.table
        text = "\n".join([title, *head, "", self.table().to_string(float_format=_fmt(4)), "",
                          "reliability of the group means:",
                          rel.to_string(float_format=_fmt(3)), *tail])
        tables = [("", self.table()), ("reliability of the group means", rel)]
        return Summary(text, _html_block(title, head, tables, tail))


def _tail(rel: Reliability, notes: Sequence[str]) -> list[str]:
    warn = rel.warning()
    return ([f"warning: {warn}"] if warn else []) + [f"note: {n}" for n in notes]


class UnknownMethod(KeyError):
    """Indexing a :class:`MicroMacroResult` with a label it does not hold."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, eq=False)
class MicroMacroResult:
    """Every requested method fitted to one dataset, indexed by method label.

    ``res["croon"]`` is a :class:`MethodResult`; ``res.params``, ``res.bse``,
    ``res.tvalues`` and ``res.pvalues`` are DataFrames (terms x methods). Methods that
    cannot fit the data are kept with status ``not_applicable`` and their reason.

    Attributes
    ----------
    results : tuple of MethodResult
    reliability : Reliability
    notes : tuple of str
        Notes on the data (dropped rows, member identity).
    """

    results: tuple[MethodResult, ...]
    reliability: Reliability
    notes: tuple[str, ...] = ()

    @property
    def methods(self) -> tuple[str, ...]:
        """Method labels, in the order asked for."""
        return tuple(r.method for r in self.results)

    def __getitem__(self, method: str) -> MethodResult:
        for r in self.results:
            if r.method == method:
                return r
        raise UnknownMethod(f"unknown method {method!r}; available: {', '.join(self.methods)}")

    def __contains__(self, method: object) -> bool:
        return method in self.methods

    def __iter__(self) -> Iterator[str]:
        return iter(self.methods)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return self.results[0].n_groups

    @property
    def n_persons(self) -> int:
        """Number of persons."""
        return self.results[0].n_persons

    @property
    def nobs(self) -> dict[str, int]:
        """Numbers of groups and persons."""
        return self.results[0].nobs

    def _frame(self, attr: str) -> pd.DataFrame:
        return pd.DataFrame({r.method: getattr(r, attr) for r in self.results})

    @property
    def params(self) -> pd.DataFrame:
        """Estimates: terms x methods."""
        return self._frame("params")

    @property
    def bse(self) -> pd.DataFrame:
        """Standard errors (each method's ``cov_type``): terms x methods."""
        return self._frame("bse")

    @property
    def tvalues(self) -> pd.DataFrame:
        """z or t statistics: terms x methods."""
        return self._frame("tvalues")

    @property
    def pvalues(self) -> pd.DataFrame:
        """Two-sided p-values: terms x methods."""
        return self._frame("pvalues")

    def cov_params(self, cov_type: str | None = None) -> pd.DataFrame:
        """Every method's :meth:`MethodResult.cov_params`, rows indexed by (method, term)."""
        return pd.concat({r.method: r.cov_params(cov_type) for r in self.results},
                         names=["method", "term"])

    def to_frame(self) -> pd.DataFrame:
        """Long table, one row per method and term (see :func:`results_table`)."""
        return results_table([r.fit for r in self.results])

    def table(self) -> pd.DataFrame:
        """Side by side: rows are terms, columns ``<method>`` and ``<method> se``."""
        cols = {}
        for r in self.results:
            cols[r.method] = r.params
            cols[f"{r.method} se"] = r.bse
        return pd.DataFrame(cols)

    def summary(self) -> Summary:
        """One method: its coefficient table; several: side by side, with flags."""
        if len(self.results) == 1:
            return self.results[0].summary()
        first = self.results[0]
        title = (f"micro-macro models: {first.n_groups} groups, {first.n_persons} persons")
        head = [f"SE {first.cov_type} for two-step methods (model-based for one-step ones)"]
        flags = [f"{r.status.value.replace('_', ' ')}: {r.method} [{r.reason_code}]: "
                 f"{r.reason or 'inadmissible'}" for r in self.results if not r.fit.ok]
        rel = self.reliability.table
        notes = dict.fromkeys((*self.notes, *(n for r in self.results for n in r.notes)))
        tail = _tail(self.reliability, list(notes))
        text = "\n".join([title, *head, "", self.table().to_string(float_format=_fmt(4)), "",
                          *flags, "reliability of the group means:",
                          rel.to_string(float_format=_fmt(3)), *tail])
        tables = [("", self.table()), ("reliability of the group means", rel)]
        return Summary(text, _html_block(title, [*head, *flags], tables, tail))

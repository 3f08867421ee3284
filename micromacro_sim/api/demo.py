"""A factor model and a mixed model are the same model: a demonstration on real data.

SPEC section 6. The five agreeableness items of the Big Five Inventory (complete cases, A1
reverse-keyed by negation) are fitted three ways:

* the one-factor CFA with all loadings fixed at 1, one residual variance shared by the items and
  free item intercepts (lavaan ``cfa(..., meanstructure = TRUE)`` with ``a*`` loadings and
  ``var*`` residual labels), by maximum likelihood. In balanced data this model has closed forms,
  computed here: it is a one-way random effects model with item fixed effects;
* the mixed model ``value ~ -1 + item + (1 | id)`` by ML with statsmodels ``MixedLM`` on the long
  data;
* the same CFA with semopy (covariance structure; the item means are saturated, so the intercept
  estimates are the item means and semopy does not report them).

The closed forms are the kernel :mod:`micromacro_sim.models.cfa_equal`, the measurement model
of the single-step SEM (covariance sigma2 I + phi 11', eigenvalues l1 = sigma2 + n phi and
l2 = sigma2); the intercepts have covariance (sigma2 + phi) / G, and the regression factor score
of person g is phi n / l1 (ybar_g - mean of the intercepts), which is the conditional mode of the
random effect.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pandas as pd

from micromacro_sim.core.status import REASON_TEXT, Reason, flags_text
from micromacro_sim.models.cfa_equal import equal_loading_cfa, saturated_loglik

__all__ = ["ITEMS", "BfiDemo", "CfaFit", "bfi_demo", "cfa_closed_form", "load_bfi",
           "long_format", "mixed_fit", "semopy_fit"]

#: The agreeableness items, in order.
ITEMS: tuple[str, ...] = ("A1", "A2", "A3", "A4", "A5")
#: How many respondents' scores the side-by-side table shows.
N_SHOWN_SCORES = 4
#: Agreement required between the closed form and a library fit (estimates and scores).
AGREEMENT_TOL = 1e-4


def load_bfi() -> pd.DataFrame:
    """The shipped BFI agreeableness items, complete cases, A1 reverse-keyed by negation.

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` (int) and ``A1``..``A5`` (float), 2709 rows in file order.
    """
    ref = resources.files("micromacro_sim").joinpath("data", "bfi_agreeableness.csv")
    with resources.as_file(ref) as path:
        raw = pd.read_csv(path)
    df = raw.dropna(subset=list(ITEMS)).reset_index(drop=True)
    df = df.astype({"id": "int64", **{c: "float64" for c in ITEMS}})
    df["A1"] = -df["A1"]
    return df[["id", *ITEMS]]


def long_format(wide: pd.DataFrame) -> pd.DataFrame:
    """Long data (id, item, value), sorted by id and then item."""
    long = wide.melt(id_vars="id", value_vars=list(ITEMS), var_name="item", value_name="value")
    long["item"] = pd.Categorical(long["item"], categories=list(ITEMS))
    return long.sort_values(["id", "item"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class CfaFit:
    """ML fit of the equal-loading, equal-residual-variance one-factor model.

    Attributes
    ----------
    intercepts, intercept_se : ndarray (n,)
        Item intercepts and their SEs (NaN where the method does not report them).
    residual_variance, residual_variance_se, factor_variance, factor_variance_se : float
        Variance estimates and their SEs (NaN where not reported).
    chisq : float
        Likelihood-ratio statistic against the saturated model (unrestricted means and covariance).
    df : int
        Its degrees of freedom, n(n+1)/2 + n - (n + 2).
    loglik : float
        Maximised log-likelihood.
    scores : ndarray (G,)
        Regression factor scores / conditional modes of the random effect.
    admissible : bool
        False when the factor variance is on its zero bound (or the fit failed).
    reason : str
        Short phrase when not admissible or not converged, else "".
    """

    intercepts: np.ndarray
    intercept_se: np.ndarray
    residual_variance: float
    residual_variance_se: float
    factor_variance: float
    factor_variance_se: float
    chisq: float
    df: int
    loglik: float
    scores: np.ndarray
    admissible: bool = True
    reason: str = ""


def cfa_closed_form(y: np.ndarray) -> CfaFit:
    """Closed-form ML fit of the one-factor model with unit loadings and one residual variance.

    The kernel :func:`~micromacro_sim.models.cfa_equal.equal_loading_cfa` (the measurement
    model of the single-step SEM) on ``y`` (G, n), complete wide data: ML estimates,
    expected-information SEs (as lavaan reports them), the chi-square against the saturated
    model and regression factor scores. When the ML factor variance is on its zero bound the
    fit is flagged "negative variance" and the variance SEs are NaN.
    """
    y = np.asarray(y, dtype=float)
    G, n = y.shape
    fit = equal_loading_cfa(y)
    se_sigma2, se_phi = np.sqrt(np.diag(np.linalg.inv(fit.information())))
    loglik = fit.loglik(y)
    return CfaFit(
        intercepts=fit.intercepts,
        intercept_se=np.full(n, np.sqrt((fit.residual_variance + fit.factor_variance) / G)),
        residual_variance=fit.residual_variance,
        residual_variance_se=float(se_sigma2),
        factor_variance=fit.factor_variance,
        factor_variance_se=float(se_phi),
        chisq=float(2 * (saturated_loglik(y) - loglik)),
        df=n * (n + 1) // 2 + n - (n + 2),
        loglik=loglik,
        scores=fit.scores(y),
        admissible=not fit.flags,
        reason=flags_text(fit.flags),
    )


def _verdict(converged: bool, factor_variance: float) -> str:
    """The reason text of a library fit ("" when converged with a positive variance)."""
    if not converged:
        return REASON_TEXT[Reason.NOT_CONVERGED]
    return REASON_TEXT[Reason.NEGATIVE_VARIANCE] if factor_variance <= 0 else ""


def _failed(G: int, n: int, exc: BaseException) -> CfaFit:
    """A flagged fit without estimates (the library raised)."""
    nan = float("nan")
    return CfaFit(
        intercepts=np.full(n, nan), intercept_se=np.full(n, nan), residual_variance=nan,
        residual_variance_se=nan, factor_variance=nan, factor_variance_se=nan, chisq=nan,
        df=n * (n + 1) // 2 + n - (n + 2), loglik=nan, scores=np.full(G, nan),
        admissible=False, reason=f"failed: {type(exc).__name__}",
    )


def mixed_fit(wide: pd.DataFrame) -> CfaFit:
    """``value ~ -1 + item + (1 | id)`` by ML with statsmodels MixedLM (lbfgs).

    The start value is the ANOVA (moment) estimate, which statsmodels' default start misses on
    designs like this one. The residual-variance SE is not reported by statsmodels (NaN); the
    factor-variance SE is statsmodels' own "Group Var" SE, sqrt(scale) times the SE of the ratio
    Group Var / scale, which is not the SE of Group Var (it ignores the covariance with the scale).
    Never raises: a failed or non-converged fit comes back flagged.

    Parameters
    ----------
    wide : DataFrame
        As returned by :func:`load_bfi` (``id`` and the item columns).

    Returns
    -------
    CfaFit
        Same fields as the CFA; ``scores`` are the conditional modes in the row order of ``wide``.
    """
    import statsmodels.api as sm
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    items = [c for c in wide.columns if c != "id"]
    y = wide[items].to_numpy(float)
    G, n = y.shape
    long = long_format(wide)
    exog = pd.get_dummies(long["item"]).astype(float).to_numpy()
    nan = float("nan")
    # ANOVA start: between and within mean squares of the item-centred data
    r = y - y.mean(axis=0)
    msa = n * np.var(r.mean(axis=1), ddof=1)
    mse = ((r - r.mean(axis=1, keepdims=True)) ** 2).sum() / ((G - 1) * (n - 1))
    tau0 = max((msa - mse) / n, 1e-3 * mse)
    start = MixedLMParams.from_components(fe_params=y.mean(axis=0), cov_re=np.array([[tau0 / mse]]))
    try:
        model = sm.MixedLM(
            long["value"].to_numpy(float), exog, groups=long["id"].to_numpy(),
            exog_re=np.ones((len(long), 1)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit(reml=False, method="lbfgs", start_params=start)
    except Exception as exc:  # numerical failure: flag, do not raise
        return _failed(G, n, exc)
    tau = float(np.asarray(res.cov_re)[0, 0])
    re = res.random_effects
    scores = np.array([float(np.asarray(re[g])[0]) for g in wide["id"]])
    reason = _verdict(bool(res.converged), tau)
    return CfaFit(
        intercepts=np.asarray(res.fe_params, dtype=float),
        intercept_se=np.asarray(res.bse_fe, dtype=float),
        residual_variance=float(res.scale),
        residual_variance_se=nan,
        factor_variance=tau,
        factor_variance_se=float(np.asarray(res.bse_re)[0]),
        chisq=float(2 * (saturated_loglik(y) - res.llf)),
        df=n * (n + 1) // 2 + n - (n + 2),
        loglik=float(res.llf),
        scores=scores,
        admissible=reason == "",
        reason=reason,
    )


def semopy_fit(wide: pd.DataFrame, *, ftol: float = 1e-12) -> CfaFit:
    """The CFA with semopy: loadings fixed at 1, one residual variance via a shared label ``v``.

    semopy's ``ModelMeans`` (FIML with a mean structure) stops at a wrong point on these data
    while reporting success (factor variance 114.9, residual variance 4.42), so the covariance
    model ``Model`` (ML, saturated means) is used: its variances, SEs, chi-square and factor scores
    are those of the CFA with intercepts; intercepts and their SEs are not reported (NaN).
    Never raises: a failed fit comes back flagged.
    """
    import semopy

    items = [c for c in wide.columns if c != "id"]
    x = wide[items].reset_index(drop=True)
    G, n = x.shape
    nan = float("nan")
    desc = "f =~ " + " + ".join(f"1*{c}" for c in items) + "\n"
    desc += "\n".join(f"{c} ~~ v*{c}" for c in items)
    try:
        model = semopy.Model(desc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit(x, options={"ftol": ftol, "maxiter": 5000})
            est = model.inspect(std_est=False)
            stats = semopy.calc_stats(model)
            scores = model.predict_factors(x)["f"].to_numpy(float)
    except Exception as exc:
        return _failed(G, n, exc)
    var = est[est["op"] == "~~"]
    phi_row = var[(var["lval"] == "f") & (var["rval"] == "f")].iloc[0]
    res_row = var[(var["lval"] == items[0]) & (var["rval"] == items[0])].iloc[0]
    phi = float(phi_row["Estimate"])
    reason = _verdict(bool(res.success), phi)
    return CfaFit(
        intercepts=np.full(n, nan),
        intercept_se=np.full(n, nan),
        residual_variance=float(res_row["Estimate"]),
        residual_variance_se=float(res_row["Std. Err"]),
        factor_variance=phi,
        factor_variance_se=float(phi_row["Std. Err"]),
        chisq=float(stats["chi2"].iloc[0]),
        df=int(stats["DoF"].iloc[0]),
        loglik=nan,
        scores=scores,
        admissible=reason == "",
        reason=reason,
    )


@dataclass(frozen=True)
class BfiDemo:
    """Results of :func:`bfi_demo`.

    Attributes
    ----------
    table : DataFrame
        Side by side: columns ``quantity``, ``cfa``, ``mixed`` and (when fitted) ``semopy``.
    ids : ndarray (G,)
        Respondent ids, the order of the score vectors.
    cfa_scores, mixed_random_effects : ndarray (G,)
        Regression factor scores (closed form) and the MixedLM conditional modes.
    semopy_scores : ndarray (G,) or None
        semopy's factor scores, if semopy was fitted.
    cfa, mixed, semopy : CfaFit
        The fits (``semopy`` is None when not fitted).
    notes : tuple of str
        What differs between the columns and why.
    """

    table: pd.DataFrame
    ids: np.ndarray
    cfa_scores: np.ndarray
    mixed_random_effects: np.ndarray
    semopy_scores: np.ndarray | None
    cfa: CfaFit
    mixed: CfaFit
    semopy: CfaFit | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_score_difference(self) -> float:
        """max |factor score - random effect| over all respondents."""
        return float(np.max(np.abs(self.cfa_scores - self.mixed_random_effects)))

    def format(self) -> str:
        """Printable text: the side-by-side table and the notes."""
        cols = [c for c in self.table.columns if c != "quantity"]

        def cell(q: str, v: float) -> str:
            if pd.isna(v):
                return "-"
            return f"{v:.0f}" if q == "df" else f"{v:.6f}"

        w = max(len(q) for q in self.table["quantity"])
        rows = [f"{'quantity':<{w}}" + "".join(f"{c:>16}" for c in cols)]
        for rec in self.table.itertuples(index=False):
            q = rec[0]
            rows.append(f"{q:<{w}}" + "".join(f"{cell(q, v):>16}" for v in rec[1:]))
        body = "\n".join(rows)
        lines = [
            "Factor model = mixed model: BFI agreeableness, "
            f"{len(self.ids)} complete cases, A1 reverse-keyed",
            "cfa: closed-form ML (lavaan cfa with unit loadings and equal residual variances); "
            "mixed: statsmodels MixedLM value ~ -1 + item + (1 | id), ML"
            + ("; semopy: semopy Model" if self.semopy is not None else ""),
            "",
            body,
            "",
            f"max |factor score - random effect| over {len(self.ids)} respondents: "
            f"{self.max_score_difference:.2e}",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _column(fit: CfaFit, n_scores: int) -> list[float]:
    return [
        *fit.intercepts, *fit.intercept_se, fit.residual_variance, fit.residual_variance_se,
        fit.factor_variance, fit.factor_variance_se, fit.chisq, float(fit.df), fit.loglik,
        *fit.scores[:n_scores],
    ]


def bfi_demo(*, with_semopy: bool = True) -> BfiDemo:
    """Fit the CFA (closed form), the mixed model (statsmodels) and optionally semopy.

    Parameters
    ----------
    with_semopy : bool, default True
        Also fit the CFA with semopy (about a second).

    Returns
    -------
    BfiDemo
        The side-by-side table, the score vectors and notes on anything that disagrees.
    """
    wide = load_bfi()
    y = wide[list(ITEMS)].to_numpy(float)
    ids = wide["id"].to_numpy()
    k = min(N_SHOWN_SCORES, len(ids))
    cfa = cfa_closed_form(y)
    mixed = mixed_fit(wide)
    sem = semopy_fit(wide) if with_semopy else None
    quantity = (
        [f"intercept {c}" for c in ITEMS] + [f"SE intercept {c}" for c in ITEMS]
        + ["residual variance", "SE residual variance", "factor variance",
           "SE factor variance", "chi-square", "df", "log-likelihood"]
        + [f"score id {i}" for i in ids[:k]]
    )
    table = pd.DataFrame({"quantity": quantity, "cfa": _column(cfa, k),
                          "mixed": _column(mixed, k)})
    if sem is not None:
        table["semopy"] = _column(sem, k)
    notes = [
        "mixed chi-square = 2 (saturated log-likelihood - MixedLM log-likelihood): the two "
        "models have the same likelihood.",
        "mixed SE factor variance is statsmodels' 'Group Var' SE, sqrt(scale) x SE(Group Var / "
        "scale); it ignores the covariance with the scale, so it is not the expected-information "
        "SE of the CFA. statsmodels reports no SE for the residual variance.",
    ]
    if sem is not None:
        notes.append(
            "semopy fits the covariance model (semopy Model, saturated means): intercepts are the "
            "item means and are not reported. semopy ModelMeans stops at a wrong point on these "
            "data while reporting success."
        )
    for name, fit in (("cfa", cfa), ("mixed", mixed), ("semopy", sem)):
        if fit is not None and fit.reason:
            notes.append(f"{name}: {fit.reason}")
    pairs = [("mixed", mixed)] + ([("semopy", sem)] if sem is not None else [])
    for name, fit in pairs:
        est = np.r_[fit.residual_variance, fit.factor_variance]
        ref = np.r_[cfa.residual_variance, cfa.factor_variance]
        if name == "mixed":
            est, ref = np.r_[est, fit.intercepts], np.r_[ref, cfa.intercepts]
        gap = max(np.max(np.abs(est - ref)), np.max(np.abs(fit.scores - cfa.scores)))
        if not np.isfinite(gap) or gap > AGREEMENT_TOL:
            notes.append(f"{name} disagrees with closed form (max difference {gap:.2e})")
    return BfiDemo(
        table=table, ids=ids, cfa_scores=cfa.scores, mixed_random_effects=mixed.scores,
        semopy_scores=None if sem is None else sem.scores, cfa=cfa, mixed=mixed, semopy=sem,
        notes=tuple(notes),
    )

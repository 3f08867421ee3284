"""One-way ANOVA moments of x and the reliability figures built on them.

The ANOVA pieces (SPEC section 3.1 steps 1-5) are shared by the Croon-van Veldhoven
adjustment and the reliability summaries, so they live here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.dataset import Dataset

__all__ = ["Anova", "anova", "coefficient_alpha", "reliability_row"]


@dataclass(frozen=True)
class Anova:
    """Between/within decomposition of the member-level x (matrices are p x p).

    Attributes
    ----------
    mu_x : ndarray (p,)
        Grand mean over all persons.
    mse : ndarray (p, p)
        Pooled within-group (co)variance, denominator N - G.
    msa : ndarray (p, p)
        Between-group mean square, sum n_g (xbar_g - mu)(xbar_g - mu)' / (G - 1).
    n0 : float
        (N - sum n_g^2 / N) / (G - 1); equals n in balanced data.
    s_xixi : ndarray (p, p)
        (MSA - MSE) / n0, the moment estimate of Var(xi).
    """

    mu_x: np.ndarray
    mse: np.ndarray
    msa: np.ndarray
    n0: float
    s_xixi: np.ndarray

    @property
    def icc1(self) -> np.ndarray:
        """ICC(1) of each x: S_xixi / (S_xixi + MSE) (diagonal elements)."""
        s, e = np.diag(self.s_xixi), np.diag(self.mse)
        return s / (s + e)

    @property
    def icc2(self) -> np.ndarray:
        """ICC(2) of each x, the reliability of a group mean: (MSA - MSE) / MSA."""
        a, e = np.diag(self.msa), np.diag(self.mse)
        return (a - e) / a


def anova(data: Dataset) -> Anova:
    """ANOVA moments of ``data.x`` (needs N > G and G > 1)."""
    G, N = data.n_groups, data.n_persons
    if G < 2 or N <= G:
        raise ValueError(f"ANOVA needs at least 2 groups and N > G (G={G}, N={N})")
    x, xbar, n = data.x, data.xbar, data.sizes.astype(float)
    mu = x.mean(axis=0)
    within = x - np.repeat(xbar, data.sizes, axis=0)
    mse = within.T @ within / (N - G)
    dev = xbar - mu
    msa = (dev * n[:, None]).T @ dev / (G - 1)
    n0 = (N - np.sum(n**2) / N) / (G - 1)
    return Anova(mu_x=mu, mse=mse, msa=msa, n0=float(n0), s_xixi=(msa - mse) / n0)


def coefficient_alpha(wide: np.ndarray) -> tuple[float, float]:
    """Raw and standardized coefficient alpha of a G x k matrix (members as items).

    Returns
    -------
    (raw, standardized) : tuple of float
        Raw: k/(k-1) (1 - sum var_i / var(total)). Standardized (psych's
        ``std.alpha``): k rbar / (1 + (k-1) rbar) with rbar the mean inter-item
        correlation.
    """
    G, k = wide.shape
    if k < 2 or G < 2:
        return float("nan"), float("nan")
    cov = np.cov(wide, rowvar=False)
    raw = k / (k - 1) * (1 - np.trace(cov) / cov.sum())
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    rbar = (corr.sum() - k) / (k * (k - 1))
    std = k * rbar / (1 + (k - 1) * rbar)
    return float(raw), float(std)


def reliability_row(data: Dataset) -> dict[str, float]:
    """Reliability figures of the first x: alpha (balanced only), ICC(1), ICC(2)."""
    out = {"alpha_raw": np.nan, "alpha_std": np.nan, "icc1": np.nan, "icc2": np.nan}
    if data.balanced and data.members_aligned and data.sizes[0] >= 2:
        out["alpha_raw"], out["alpha_std"] = coefficient_alpha(data.wide(0))
    try:
        a = anova(data)
    except ValueError:
        return out
    out["icc1"] = float(a.icc1[0])
    out["icc2"] = float(a.icc2[0])
    return out


def reliability_rows(datasets: list[Dataset]) -> dict[str, np.ndarray]:
    """:func:`reliability_row` of many datasets, vectorized when all are balanced alike.

    Returns
    -------
    dict of column -> ndarray (R,)
        alpha_raw, alpha_std, icc1, icc2.
    """
    keys = ("alpha_raw", "alpha_std", "icc1", "icc2")
    shapes = {(d.n_groups, int(d.sizes[0])) if d.balanced and d.members_aligned else None
              for d in datasets}
    if len(shapes) != 1 or None in shapes or next(iter(shapes))[1] < 2 or len(datasets) == 0:
        rows = [reliability_row(d) for d in datasets]
        return {k: np.array([r[k] for r in rows], dtype=float) for k in keys}
    G, k = next(iter(shapes))
    W = np.stack([d.x[:, 0].reshape(G, k) for d in datasets])  # (R, G, k)
    dev = W - W.mean(axis=1, keepdims=True)
    cov = np.einsum("rgi,rgj->rij", dev, dev) / (G - 1)
    var = np.diagonal(cov, axis1=1, axis2=2)
    total = cov.sum(axis=(1, 2))
    alpha_raw = k / (k - 1) * (1 - var.sum(axis=1) / total)
    sd = np.sqrt(var)
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    rbar = (corr.sum(axis=(1, 2)) - k) / (k * (k - 1))
    alpha_std = k * rbar / (1 + (k - 1) * rbar)
    # one-way ANOVA (balanced): MSE within, MSA = k Var(group means), n0 = k
    gm = W.mean(axis=2)
    mse = ((W - gm[:, :, None]) ** 2).sum(axis=(1, 2)) / (G * (k - 1))
    msa = k * ((gm - gm.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) / (G - 1)
    s = (msa - mse) / k
    return {"alpha_raw": alpha_raw, "alpha_std": alpha_std, "icc1": s / (s + mse),
            "icc2": (msa - mse) / msa}

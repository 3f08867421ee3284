"""The data-generating process (SPEC section 2 and docs/generator.md).

At its defaults this is Croon & van Veldhoven's (2007, p. 52) model: (Z, xi)
multivariate normal with unit Z variances; y = b0 + Z'b_z + b_xi xi + e;
x_ig = xi_g + nu_ig. The factors of :data:`~micromacro_sim.design.fields.GENERATOR_FIELDS`
extend it (several constructs, non-normality, ordinal members, unequal loadings and
member variances, missing members, heteroscedastic errors); each is documented with
its formula in docs/generator.md.

Reproducibility contract. The replication's generator ``rng`` is drawn from in this
order, whatever the factors: sizes, then the (G, q + 1) normals of (Z, xi_1), then e,
then the member deviations of the first construct. Every other random component has
its own child stream of the replication's seed sequence (see :func:`child_rng`), so
adding a factor never changes the draws of the others, and a scenario at the defaults
draws exactly what the original generator drew.

Plug-ins that wrap or replace the generator keep the signature
``generate(scenario, rng) -> Dataset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from micromacro_sim.design.fieldchecks import het_extremes
from micromacro_sim.design.fleishman import Fleishman, fleishman, intermediate_matrix
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.missing import mar_intercept, observed_mask
from micromacro_sim.generate.ordinal import categorize, threshold_values

__all__ = ["Plan", "child_rng", "generate", "plan"]

#: First word of a child stream's extra spawn-key words (ASCII "GEN"), then the component.
CHILD_TAG = 0x47454E00
#: Child-stream components.
EXTRA_XI, EXTRA_NU, MISSING = 1, 2, 3


def child_rng(rng: np.random.Generator, component: int) -> np.random.Generator:
    """The child stream ``component`` of the replication whose generator is ``rng``.

    Derived from ``rng``'s seed sequence (entropy and spawn key, plus
    ``(CHILD_TAG, component)``), not from its state: the same whatever was drawn from
    ``rng`` before.
    """
    ss = getattr(rng.bit_generator, "seed_seq", None)
    if not isinstance(ss, np.random.SeedSequence):
        raise ValueError("generate: this scenario needs child streams, so rng must be "
                         "built from a numpy SeedSequence (e.g. numpy.random.default_rng(seed))")
    child = np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, CHILD_TAG, component))
    return np.random.Generator(np.random.PCG64(child))


@dataclass(frozen=True)
class Plan:
    """What a scenario's generator needs besides random numbers (computed once).

    Attributes
    ----------
    chol : ndarray (q + p, q + p)
        Lower Cholesky factor of the covariance of (Z, xi) (normal xi), or of the
        intermediate correlation matrix of Vale & Maurelli (non-normal xi).
    xi_poly, nu_poly, e_poly : Fleishman
        Power-method polynomials of the standardized xi, nu and e.
    thresholds : ndarray or None
        Ordinal thresholds on the standardized latent-response scale.
    mar_intercept : float or None
        Intercept of the MAR selection.
    het_gamma, het_log_norm : float
        Var(e_g) = sigma2_eps exp(gamma t_g - log_norm) (0, 0: homoscedastic).
    """

    chol: np.ndarray
    xi_poly: Fleishman
    nu_poly: Fleishman
    e_poly: Fleishman
    thresholds: np.ndarray | None
    mar_intercept: float | None
    het_gamma: float
    het_log_norm: float


def _het(sc: Scenario) -> tuple[float, float]:
    """gamma and log E[exp(gamma t)] of the error-variance function (docs/generator.md)."""
    if sc.e_het is None:
        return 0.0, 0.0
    if sc.e_het.by == "z":  # t = Z_1 ~ N(0, 1); extremes its 0.5% and 99.5% quantiles
        span = 2 * 2.5758293035489004
        gamma = math.log(sc.e_het.ratio) / span
        return gamma, gamma * gamma / 2
    lo, hi = het_extremes(sc.group_size, sc.n_groups)
    gamma = math.log(sc.e_het.ratio) / (hi - lo)
    support, prob = sc.group_size.distribution(sc.n_groups)
    return gamma, float(np.log(prob @ np.exp(gamma * (support - lo)))) + gamma * lo


@lru_cache(maxsize=512)
def plan(sc: Scenario) -> Plan:
    """The :class:`Plan` of a scenario (cached)."""
    xi_poly = fleishman(sc.xi_skew, sc.xi_kurtosis)
    if xi_poly.is_identity:
        chol = sc.covariance_cholesky
    else:
        polys = (fleishman(0.0, 0.0),) * sc.n_z + (xi_poly,) * sc.n_x
        chol = np.linalg.cholesky(intermediate_matrix(sc.correlation, polys))
    mar = None
    if sc.missing_mar is not None:
        w_poly = xi_poly if sc.missing_mar.on == "xi" else fleishman(0.0, 0.0)
        mar = mar_intercept(sc.missing_mar.rate, sc.missing_mar.strength, w_poly)
    thresholds = (None if sc.categories is None
                  else threshold_values(sc.thresholds, sc.categories))
    return Plan(chol, xi_poly, fleishman(sc.nu_skew, sc.nu_kurtosis),
                fleishman(sc.e_skew, sc.e_kurtosis), thresholds, mar, *_het(sc))


def _latent(sc: Scenario, pl: Plan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Z (G, q) and xi (G, p): the main stream's (G, q + 1) normals, then the child's."""
    G, q, p = sc.n_groups, sc.n_z, sc.n_x
    normals = rng.standard_normal((G, q + 1))
    if p > 1:
        normals = np.hstack([normals, child_rng(rng, EXTRA_XI).standard_normal((G, p - 1))])
    u = normals @ pl.chol.T
    if pl.xi_poly.is_identity:
        return u[:, :q], u[:, q:]
    return u[:, :q], pl.xi_poly.apply(u[:, q:]) * math.sqrt(sc.var_xi)


def _error_sd(sc: Scenario, pl: Plan, sizes: np.ndarray, z: np.ndarray) -> np.ndarray | float:
    """SD of each group's error: sqrt(sigma2_eps) times the heteroscedastic factor."""
    sd = math.sqrt(sc.sigma2_eps)
    if sc.e_het is None:
        return sd
    t = z[:, 0] if sc.e_het.by == "z" else sizes.astype(float)
    return sd * np.exp(0.5 * (pl.het_gamma * t - pl.het_log_norm))


def _recycled(values: tuple[float, ...], position: np.ndarray) -> np.ndarray | float:
    """Per-member values of a recycled per-position field (a scalar when all are equal)."""
    if len(set(values)) == 1:
        return values[0]
    return np.asarray(values)[position % len(values)]


def _members(sc: Scenario, pl: Plan, rng: np.random.Generator, sizes: np.ndarray,
             xi: np.ndarray) -> np.ndarray:
    """Member values x (N, p) before any member goes missing."""
    N, p = int(sizes.sum()), sc.n_x
    dev = rng.standard_normal(N)[:, None]
    if p > 1:
        dev = np.hstack([dev, child_rng(rng, EXTRA_NU).standard_normal((N, p - 1))])
    dev = pl.nu_poly.apply(dev)
    position = np.arange(N) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    mvar = _recycled(sc.member_variances, position)
    nu = dev * np.sqrt(sc.sigma2_nu * mvar if np.isscalar(mvar) else sc.sigma2_nu * mvar[:, None])
    load = _recycled(sc.loadings, position)
    latent = np.repeat(xi, sizes, axis=0)
    if not (np.isscalar(load) and load == 1.0):
        latent = latent * (load if np.isscalar(load) else load[:, None])
    x = latent + nu
    if pl.thresholds is not None:
        x = categorize(x / math.sqrt(sc.var_xi + sc.sigma2_nu), pl.thresholds)
    return x


def _missing(sc: Scenario, pl: Plan, rng: np.random.Generator, sizes: np.ndarray,
             z: np.ndarray, xi: np.ndarray) -> np.ndarray | None:
    """Which members are observed (None: all), from the MISSING child stream."""
    if not sc.absent_members:
        return None
    prob = np.full(sc.n_groups, sc.missing_mcar)
    if sc.missing_mar is not None:
        w = z[:, 0] if sc.missing_mar.on == "z" else xi[:, 0] / math.sqrt(sc.var_xi)
        mar = 0.5 * (1 + np.tanh(0.5 * (pl.mar_intercept + sc.missing_mar.strength * w)))
        prob = 1 - (1 - prob) * (1 - mar)
    u = child_rng(rng, MISSING).random(int(sizes.sum()))
    return observed_mask(u, prob, sizes)


def generate(scenario: Scenario, rng: np.random.Generator) -> Dataset:
    """Draw one dataset of ``scenario`` from ``rng``.

    Parameters
    ----------
    scenario : Scenario
    rng : numpy.random.Generator
        The replication's generator (:func:`micromacro_sim.generate.seeding.replication_rng`);
        scenarios with several constructs or missing members also use its seed
        sequence's child streams (:func:`child_rng`).

    Returns
    -------
    Dataset
        With the true ``xi`` attached; with missing members, the observed members only,
        each keeping its member id (its position in the complete group).
    """
    sc, pl = scenario, plan(scenario)
    G = sc.n_groups
    sizes = sc.group_size.draw(G, rng)
    z, xi = _latent(sc, pl, rng)
    e = rng.standard_normal(G)
    e = pl.e_poly.apply(e) * _error_sd(sc, pl, sizes, z)
    y = sc.beta0 + z @ np.asarray(sc.beta_z) + xi @ np.asarray(sc.beta_xi) + e
    x = _members(sc, pl, rng, sizes, xi)
    keep = _missing(sc, pl, rng, sizes, z, xi)
    member = None
    if keep is not None:
        position = np.arange(len(keep)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        group = np.repeat(np.arange(G), sizes)[keep]
        x, member, sizes = x[keep], position[keep], np.bincount(group, minlength=G)
    return Dataset(
        group=np.repeat(np.arange(G), sizes),
        x=x,
        y=y,
        z=z,
        xi=xi,
        x_names=sc.x_names,
        z_names=sc.z_names,
        member=member,
    )

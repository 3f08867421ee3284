"""The member-level population a scenario implies, as functions of its latent normal.

Every construct's group mean is ``xi = sqrt(var_xi) P(V)`` for a standard normal ``V``
(``P`` is xi's Fleishman polynomial, the identity for normal xi), and the (Z, V) are
jointly normal with correlation matrix :func:`normal_correlation`. A member at position
i answers ``x*_i = l_i xi + nu_i`` (``Var(nu_i) = m_i sigma2_nu``), cut into categories
when the scenario is ordinal (docs/generator.md). This module gives, on any array of V
values:

* ``f_i(V) = E[x_i | xi]`` and ``v_i(V) = Var(x_i | xi)`` per member position class,
* the group's true score on the scale of x, ``T = sum_i w_i f_i`` with the design weights
  ``w_i = E_n[1{i < n} / n]`` (the expected weight of position i in a group mean), and the
  marker's ``f_0``,
* the variance of the observed group mean around ``T``, given the size distribution and
  the chance ``m`` that a member is missing (:meth:`MemberModel.noise`).

Expectations over V are sums over :func:`grid` (a trapezoid rule, exact to rounding for
these smooth integrands); the double ones over the product of two such grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from micromacro_sim.design.fleishman import Fleishman, fleishman, intermediate_matrix
from micromacro_sim.design.measurement import threshold_values

__all__ = ["MemberModel", "grid", "normal_correlation"]

#: Half-width of the quadrature grids on the standard normal scale (mass beyond: 1.5e-23).
GRID_HALF_WIDTH = 10.0
#: Nodes of the one-dimensional grid and of each axis of the two-dimensional one.
GRID_NODES, GRID_NODES_2D = 4001, 601
#: Bisection steps that invert a monotone piece of the member deviations' polynomial.
_BISECT = 80


def grid(n: int = GRID_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) of the trapezoid rule for E[g(V)], V ~ N(0, 1)."""
    v = np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, n)
    w = np.exp(-0.5 * v * v)
    w[[0, -1]] *= 0.5
    return v, w / w.sum()


def normal_correlation(sc) -> np.ndarray:  # noqa: ANN001 - a Scenario (design layer peer)
    """Correlation matrix of the normals (Z_1..Z_q, V_1..V_p) behind (Z, xi)."""
    xi_poly = fleishman(sc.xi_skew, sc.xi_kurtosis)
    if xi_poly.is_identity:
        return np.asarray(sc.correlation, dtype=float)
    polys = (fleishman(0.0, 0.0),) * sc.n_z + (xi_poly,) * sc.n_x
    return intermediate_matrix(sc.correlation, polys)


def _poly_sf(poly: Fleishman, y: np.ndarray) -> np.ndarray:
    """P(poly(U) > y) for a standard normal U, exactly: the cubic is split at its turning
    points into monotone pieces, each inverted by bisection."""
    from scipy.special import ndtr

    if poly.is_identity:
        return ndtr(-y)
    a, b, c, d = poly.a, poly.b, poly.c, poly.d
    crit = np.roots([3 * d, 2 * c, b]) if (d != 0 or c != 0) else np.array([])
    turns = sorted(float(r.real) for r in np.atleast_1d(crit) if abs(r.imag) < 1e-12)
    edges = [-40.0, *[t for t in turns if -40 < t < 40], 40.0]
    out = np.zeros_like(y, dtype=float)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        up = poly.apply(np.array(hi)) >= poly.apply(np.array(lo))
        left, right = np.full_like(y, lo, dtype=float), np.full_like(y, hi, dtype=float)
        for _ in range(_BISECT):  # the point of the piece where poly crosses y
            mid = 0.5 * (left + right)
            above = (a + mid * (b + mid * (c + mid * d))) > y
            go_left = above if up else ~above
            right, left = np.where(go_left, mid, right), np.where(go_left, left, mid)
        cut = 0.5 * (left + right)
        out += (ndtr(hi) - ndtr(cut)) if up else (ndtr(cut) - ndtr(lo))
    return out


@dataclass(frozen=True)
class MemberModel:
    """The member level of one construct of a scenario (all constructs share it).

    Attributes
    ----------
    sc : Scenario
    """

    sc: object

    # ------------------------------------------------------------------ positions
    @cached_property
    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Designed group sizes and their probabilities."""
        return self.sc.group_size.distribution(self.sc.n_groups)

    @cached_property
    def classes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loading, member variance) per position class and each position's class
        (positions 0 .. largest size - 1)."""
        load, mvar = self.sc.loadings, self.sc.member_variances
        n_max = int(self.sizes[0].max())
        period = len(load) * len(mvar) // math.gcd(len(load), len(mvar))
        pairs = [(load[i % len(load)], mvar[i % len(mvar)]) for i in range(min(period, n_max))]
        uniq = sorted(set(pairs), key=pairs.index)
        one = np.array([uniq.index(p) for p in pairs])
        cls = one[np.arange(n_max) % len(one)]  # the classes repeat with the period
        return (np.array([p[0] for p in uniq]), np.array([p[1] for p in uniq]), cls)

    @property
    def parallel(self) -> bool:
        """Every position has the same loading and member variance."""
        return len(self.classes[0]) == 1

    def counts(self, n: int) -> np.ndarray:
        """How many of positions 0..n-1 fall in each position class."""
        return np.bincount(self.classes[2][:n], minlength=len(self.classes[0])).astype(float)

    @cached_property
    def weights(self) -> np.ndarray:
        """Design weight of each position class in the group's true score:
        ``sum_n p_n (positions of the class among the first n) / n``."""
        sizes, prob = self.sizes
        return sum((p * self.counts(int(n)) / n for n, p in zip(sizes, prob, strict=True)),
                   np.zeros(len(self.classes[0])))

    @property
    def linear(self) -> bool:
        """Continuous members: every f_i is linear in xi."""
        return self.sc.categories is None

    # ------------------------------------------------------------------ f and v
    def xi(self, v: np.ndarray) -> np.ndarray:
        """xi as a function of its normal."""
        return math.sqrt(self.sc.var_xi) * fleishman(self.sc.xi_skew,
                                                     self.sc.xi_kurtosis).apply(v)

    def moments(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``f_c(V)`` and ``v_c(V)`` per position class: arrays (C, *v.shape)."""
        sc = self.sc
        load, mvar, _ = self.classes
        u = self.xi(v)
        shape = (len(load),) + (1,) * u.ndim
        lc, mc = load.reshape(shape), mvar.reshape(shape)
        if self.linear:
            return lc * u, np.broadcast_to(sc.sigma2_nu * mc, (len(load), *u.shape)).copy()
        s = math.sqrt(sc.var_xi + sc.sigma2_nu)
        t = threshold_values(sc.thresholds, sc.categories)
        nu = fleishman(sc.nu_skew, sc.nu_kurtosis)
        sd = np.sqrt(sc.sigma2_nu * mc)
        f = np.ones((len(load), *u.shape))
        second = np.ones_like(f)
        for j, tj in enumerate(t):  # P(x >= j + 2 | xi) = P(nu > s t_j - l xi)
            surv = _poly_sf(nu, (s * tj - lc * u) / sd)
            f += surv
            second += (2 * (j + 2) - 1) * surv
        return f, second - f * f

    def score(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The true score on the scale of x, ``T(V)``, and the marker's ``f_0(V)``."""
        f, _ = self.moments(v)
        _, _, cls = self.classes
        return np.tensordot(self.weights, f, axes=1), f[cls[0]]

    # ------------------------------------------------------------------ noise
    def noise(self, v: np.ndarray, m: np.ndarray | float) -> np.ndarray:
        """``E[(xbar - T)^2 | V, m]`` over the size distribution: the observed group
        mean's variance around the true score when each member is missing with
        probability ``m`` (``m`` broadcasts against ``v``).

        Given the designed size n and k observed members (a uniformly random subset:
        missingness acts on whole groups, and the member kept when all go missing is
        chosen at random), ``xbar - T = (T_n - T) + (subset mean - T_n)``; the second part
        has variance ``vbar_n / k + (1/k - 1/n) S2_n`` (sampling without replacement from
        the n positions' true scores, S2_n their variance with divisor n - 1).
        """
        f, var = self.moments(v)
        sizes, prob = self.sizes
        T = np.tensordot(self.weights, f, axes=1)
        m = np.asarray(m, dtype=float)
        out = np.zeros(np.broadcast_shapes(T.shape, m.shape))
        for n, p in zip(sizes.astype(int), prob, strict=True):
            share = self.counts(n) / n  # each class's share of positions 0..n-1
            t_n = np.tensordot(share, f, axes=1)
            inv_k = _mean_inverse_observed(n, m)
            out = out + p * (np.tensordot(share, var, axes=1) * inv_k + (t_n - T) ** 2)
            if n > 1 and not self.parallel:
                s2 = np.tensordot(share, (f - t_n) ** 2, axes=1) * n / (n - 1)
                out = out + p * (inv_k - 1.0 / n) * s2
        return out


def _mean_inverse_observed(n: int, m: np.ndarray) -> np.ndarray | float:
    """E[1/k] for k ~ Binomial(n, 1 - m) observed members, k = 0 counted as 1 (the group
    keeps one member)."""
    if not np.any(m):
        return 1.0 / n
    from scipy.stats import binom

    k = np.arange(n + 1).reshape((n + 1,) + (1,) * m.ndim)
    pmf = binom.pmf(k, n, 1.0 - m)
    inv = np.where(k == 0, 1.0, 1.0 / np.maximum(k, 1))
    return (pmf * inv).sum(axis=0)

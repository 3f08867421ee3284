"""Data-generating process of Croon & van Veldhoven (2007, p. 52), SPEC section 2.

(Z, xi) multivariate normal with unit Z variances; y = b0 + Z'b_z + b_xi xi + e;
x_ig = xi_g + nu_ig. The order of draws from the generator is part of the
reproducibility contract: sizes, then (Z, xi), then e, then nu.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset
from .scenario import Scenario

__all__ = ["generate"]


def generate(scenario: Scenario, rng: np.random.Generator) -> Dataset:
    """Draw one dataset of ``scenario`` from ``rng``.

    Parameters
    ----------
    scenario : Scenario
    rng : numpy.random.Generator

    Returns
    -------
    Dataset
        With the true ``xi`` attached.
    """
    G, q = scenario.n_groups, scenario.n_z
    sizes = scenario.group_size.draw(G, rng)
    chol = scenario.covariance_cholesky
    u = rng.standard_normal((G, q + 1)) @ chol.T
    z, xi = u[:, :q], u[:, q]
    eps = rng.standard_normal(G) * np.sqrt(scenario.sigma2_eps)
    y = scenario.beta0 + z @ np.asarray(scenario.beta_z) + scenario.beta_xi * xi + eps
    nu = rng.standard_normal(int(sizes.sum())) * np.sqrt(scenario.sigma2_nu)
    x = np.repeat(xi, sizes) + nu
    return Dataset(
        group=np.repeat(np.arange(G), sizes),
        x=x,
        y=y,
        z=z,
        xi=xi,
        x_names=("xi",),
        z_names=scenario.z_names,
    )

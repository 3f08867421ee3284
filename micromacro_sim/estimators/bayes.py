"""``bayes``: the micro-macro latent covariate model by Gibbs sampling (docs/bayes.md).

The method wires :mod:`micromacro_sim.models.bayes_gibbs` into the estimator contract:
options, the random stream of each fit, the posterior summary as estimates, SEs and
credible intervals, and the convergence verdict.

Random numbers. A fit's stream is a function of the data and the option ``seed`` alone:
the SHA-256 of the canonical data (each group's members sorted by value, Z, y) and the
seed. So a dataset gives the same draws whether it is fitted alone, in any batch of
replications, on any number of processes, or with its rows in another order.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType

import numpy as np

from micromacro_sim.core.options import Option
from micromacro_sim.core.results import SE_TYPES, BatchResult, FitResult
from micromacro_sim.core.status import Reason, flag, no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.bayes_gibbs import (
    DEFAULT_CHAINS,
    DEFAULT_DRAWS,
    DEFAULT_THIN,
    DEFAULT_WARMUP,
    GibbsData,
    GibbsPriors,
    gibbs_summary,
    param_names,
)

__all__ = ["Bayes", "RHAT_MAX", "ESS_MIN"]

#: Convergence rule on every reported parameter (Vehtari et al. 2021).
RHAT_MAX, ESS_MIN = 1.01, 400.0


def _prior_options() -> dict[str, Option]:
    d = GibbsPriors()
    return {
        "coef_var": Option(d.coef_var, "float", "prior variance of b0, b_z, b_xi "
                           "(independent normals with mean 0)", low=0.0),
        "gamma_var": Option(d.gamma_var, "float", "prior variance of xi's regression on Z",
                            low=0.0),
        "sigma2_shape": Option(d.sigma2_shape, "float", "inverse-gamma shape of the "
                               "members' variance"),
        "sigma2_scale": Option(d.sigma2_scale, "float", "inverse-gamma scale of the "
                               "members' variance"),
        "s2e_shape": Option(d.s2e_shape, "float", "inverse-gamma shape of y's residual "
                            "variance"),
        "s2e_scale": Option(d.s2e_scale, "float", "inverse-gamma scale of y's residual "
                            "variance"),
        "tau2_df": Option(d.tau2_df, "float", "weight, in groups, of the prior guess of the "
                          "group-level variance: tau2 ~ IG(df / 2, df * guess / 2)", low=0.0),
        "tau2_guess": Option(0.0, "float", "the prior guess of tau2; 0: the residual mean "
                             "square of the group means on [1, Z]", low=0.0),
        "tau2_guess_factor": Option(d.tau2_guess_factor, "float",
                                    "multiplies the prior guess of tau2", low=0.0),
    }


#: Options that must be strictly positive.
_POSITIVE = ("coef_var", "gamma_var", "tau2_df", "tau2_guess_factor")


class Bayes(Estimator):
    """Bayesian latent covariate model for few groups: a batched Gibbs sampler.

    ``x_ig = xi_g + nu_ig``; ``xi_g = gamma0 + gamma'Z_g + zeta_g``;
    ``y_g = b0 + b_z'Z_g + b_xi xi_g + e_g`` (Zitzmann, Ludtke & Robitzsch 2015), with a
    slightly informative prior on the group-level variance (Zitzmann, Helm & Hecht 2021).
    The estimate is the posterior median (option ``point``), ``se`` the posterior SD, and
    the equal-tailed credible interval at ``level`` goes to ``ci_low`` / ``ci_high``
    (coverage and rejection use it). A fit whose split R-hat exceeds 1.01 or whose bulk
    ESS is below 400 on a reported parameter is flagged ``mcmc_not_converged``. Groups of
    any size, and absent members: the sampler uses each group's observed members.

    Reference: the same model and priors in Stan (rstan), committed fixtures.
    """

    name = "bayes"
    description = "Bayesian latent covariate model by Gibbs sampling (few groups)"
    options = {
        "point": Option("median", "str", "posterior point estimate",
                        choices=("median", "mean")),
        "level": Option(0.95, "float", "probability of the credible interval", low=0.5,
                        high=1.0),
        "chains": Option(DEFAULT_CHAINS, "int", "chains per fit (at least 2)", low=2),
        "warmup": Option(DEFAULT_WARMUP, "int", "warm-up iterations per chain", low=0),
        "draws": Option(DEFAULT_DRAWS, "int", "kept draws per chain", low=100),
        "thin": Option(DEFAULT_THIN, "int", "keep every thin-th iteration", low=1),
        "seed": Option(0, "int", "added to the data's hash to seed the chains", low=0),
        **_prior_options(),
    }
    max_x = 1
    default_se = "classical"  # the posterior SD
    batch_designs = ("balanced", "unbalanced")
    uses_member_positions = False  # group sums only
    contract_options = MappingProxyType({"warmup": 50, "draws": 100})
    mcmc = True

    # ------------------------------------------------------------------ pieces
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        for name in _POSITIVE:
            if not self.params[name] > 0:
                raise ValueError(f"option {name}: must be > 0, got {self.params[name]!r}")
        try:
            self._priors = self.priors()
        except ValueError as exc:  # the priors' own checks, as an option error
            raise ValueError(f"option {str(exc).replace('GibbsPriors.', '')}") from None

    def priors(self) -> GibbsPriors:
        """The :class:`GibbsPriors` of the options."""
        p = self.params
        guess = float(p["tau2_guess"])
        return GibbsPriors(coef_var=float(p["coef_var"]), gamma_var=float(p["gamma_var"]),
                           sigma2_shape=float(p["sigma2_shape"]),
                           sigma2_scale=float(p["sigma2_scale"]),
                           s2e_shape=float(p["s2e_shape"]), s2e_scale=float(p["s2e_scale"]),
                           tau2_df=float(p["tau2_df"]), tau2_guess=guess if guess > 0 else None,
                           tau2_guess_factor=float(p["tau2_guess_factor"]))

    def _data(self, data: Dataset) -> tuple[GibbsData, np.random.SeedSequence]:
        """The sampler's data in canonical member order, and the fit's seed."""
        x = np.asarray(data.x[:, 0], dtype=float)
        order = np.lexsort((x, data.group))
        group, x = np.asarray(data.group)[order], x[order]
        z, y = np.asarray(data.z, dtype=float), np.asarray(data.y, dtype=float)
        h = hashlib.sha256()
        for part in (np.bincount(group, minlength=len(y)), x, z, y):
            h.update(np.ascontiguousarray(part, dtype=float).tobytes())
        words = np.frombuffer(h.digest(), dtype=np.uint32)
        seed = np.random.SeedSequence([int(self.params["seed"]), *map(int, words)])
        return GibbsData.from_long(group, x, z, y), seed

    def _summaries(self, datasets: tuple[Dataset, ...]) -> dict[str, np.ndarray]:
        parts = [self._data(d) for d in datasets]
        p = self.params
        return gibbs_summary(GibbsData.stack([g for g, _ in parts]), self._priors,
                             seeds=[s for _, s in parts], point=str(p["point"]),
                             level=float(p["level"]), chains=int(p["chains"]),
                             warmup=int(p["warmup"]), draws=int(p["draws"]),
                             thin=int(p["thin"]))

    def _reported(self, q: int) -> np.ndarray:
        """Columns of the reported terms (intercept, z..., xi) in the sampler's order."""
        names = param_names(q)
        return np.array([names.index(n) for n in ("b0", *(f"b_z{j + 1}" for j in range(q)),
                                                  "b_xi")])

    # ------------------------------------------------------------------ fits
    def _fit(self, data: Dataset) -> FitResult:
        return self._result(self._fit_stack((data,)), 0, data.terms)

    def _fit_batch(self, batch: Batch) -> BatchResult:
        res = self._fit_stack(batch.datasets)
        R = len(batch.datasets)
        bse = {t: np.full(res["params"].shape, np.nan) for t in SE_TYPES}
        bse["classical"] = res["se"]
        flags = no_flags(R)
        for r in np.flatnonzero(~res["converged"]):
            flags[r] = (res["flag"][r],)
        return BatchResult(
            method=self.label, terms=batch.terms, params=res["params"], bse=bse,
            df_resid=np.full(R, np.nan), converged=res["converged"],
            admissible=np.ones(R, dtype=bool), flags=flags, two_step=False, engine="fast",
            ci=res["ci"], ci_level=float(self.params["level"]),
        )

    def _fit_stack(self, datasets: tuple[Dataset, ...]) -> dict[str, np.ndarray]:
        """Estimates, SEs, intervals and the convergence verdict of each dataset."""
        q = datasets[0].z.shape[1] if datasets[0].z.ndim == 2 else 1
        s = self._summaries(datasets)
        cols = self._reported(q)
        rhat, ess = s["rhat"][:, cols], s["ess_bulk"][:, cols]
        ok = np.all(rhat <= RHAT_MAX, axis=1) & np.all(ess >= ESS_MIN, axis=1)
        text = [f"the Markov chains did not converge: max split R-hat {np.max(rh):.3f}, "
                f"min bulk ESS {np.min(es):.0f} (rule: R-hat <= {RHAT_MAX}, ESS >= "
                f"{ESS_MIN:g})" for rh, es in zip(rhat, ess, strict=True)]
        return {"params": s["estimate"][:, cols], "se": s["sd"][:, cols],
                "ci": np.stack([s["ci_low"][:, cols], s["ci_high"][:, cols]], axis=-1),
                "converged": ok,
                "flag": [flag(Reason.MCMC_NOT_CONVERGED, t) for t in text]}

    def _result(self, res: dict[str, np.ndarray], r: int, terms: tuple[str, ...]) -> FitResult:
        ok = bool(res["converged"][r])
        return FitResult(method=self.label, terms=terms, params=res["params"][r],
                         bse={"classical": res["se"][r]}, df_resid=None, converged=ok,
                         admissible=True, flags=() if ok else (res["flag"][r],),
                         ci=res["ci"][r], ci_level=float(self.params["level"]))

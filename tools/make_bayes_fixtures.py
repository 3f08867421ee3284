"""Write tests/fixtures/bayes: datasets, rstan's posterior summaries and diagnostics.

* ``<case>.json``: a dataset drawn by the package's generator (``Scenario.from_params`` and
  ``numpy.random.default_rng(seed)``), as long data (group, x) and as the sufficient
  statistics the sampler uses, with the prior hyperparameters (the data-based ``tau2``
  scale included) and Stan's settings.
* ``stan_<case>.csv``: the latent covariate model with the same priors sampled by rstan
  (``tools/r/bayes_stan.R stan``): posterior mean, SD and their MCSEs per parameter.
* ``diag_draws.csv`` and ``diag_rstan.csv``: synthetic chains and rstan 2.21's R-hat, ESS
  and MCSEs of them (``tools/r/bayes_stan.R diagnostics``).

Run from the repository root: ``python tools/make_bayes_fixtures.py`` (needs Rscript with
rstan and jsonlite; the tests read the committed files only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models.bayes_gibbs import GibbsData, GibbsPriors

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "bayes"

_CV = dict(beta0=0.3, beta_z=0.3, beta_xi=0.3, sigma2_eps=0.35)
#: name -> (scenario parameters, seed): G 20..100, ICC .05..2, balanced, Poisson sizes
#: (groups of 1 included), missing members, one and two Z.
CASES: dict[str, tuple[dict, int]] = {
    "g20_icc05": (dict(n_groups=20, group_size=10, icc=0.05, r_zxi=0.3), 11),
    "g20_icc20_2z": (dict(n_groups=20, group_size=5, icc=0.2, n_z=2, r_zxi=[0.3, 0.2]), 12),
    "g30_icc05_mcar": (dict(n_groups=30, group_size=10, icc=0.05, r_zxi=0.3,
                            missing_mcar=0.2), 13),
    "g30_icc10_pois1": (dict(n_groups=30, group_size={"poisson": 3, "min": 1}, icc=0.1,
                             r_zxi=0.3), 14),
    "g30_icc20_2z": (dict(n_groups=30, group_size=5, icc=0.2, n_z=2, r_zxi=[0.3, 0.0]), 15),
    "g50_icc10": (dict(n_groups=50, group_size=10, icc=0.1, r_zxi=0.3), 16),
    "g50_icc05_pois_2z": (dict(n_groups=50, group_size={"poisson": 8, "min": 2}, icc=0.05,
                               n_z=2, r_zxi=[0.3, 0.2]), 17),
    "g50_icc20_mcar": (dict(n_groups=50, group_size=10, icc=0.2, r_zxi=0.0,
                            missing_mcar=0.2), 18),
    "g100_icc10": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3), 19),
    "g100_icc05_mcar_2z": (dict(n_groups=100, group_size=10, icc=0.05, n_z=2,
                                r_zxi=[0.3, 0.2], missing_mcar=0.2), 20),
    "g100_icc20_pois": (dict(n_groups=100, group_size={"poisson": 10, "min": 2}, icc=0.2,
                             r_zxi=0.3), 21),
    "g20_icc10_pois": (dict(n_groups=20, group_size={"poisson": 10, "min": 2}, icc=0.1,
                            r_zxi=0.3), 22),
}
#: rstan's settings for every case.
STAN = dict(chains=4, warmup=1000, draws=5000, adapt_delta=0.95)


def case_record(name: str, params: dict, seed: int) -> dict:
    """The JSON record of one case."""
    full = {**_CV, **params}
    data = generate(Scenario.from_params(full), np.random.default_rng(seed))
    gd = GibbsData.from_dataset(data)
    priors = GibbsPriors()
    pri = {k: getattr(priors, k) for k in ("coef_var", "gamma_var", "sigma2_shape",
                                           "sigma2_scale", "s2e_shape", "s2e_scale",
                                           "tau2_df", "tau2_guess_factor")}
    pri.update(tau2_shape=priors.tau2_shape, tau2_scale=float(priors.tau2_scale(gd)[0]),
               tau2_guess=float(gd.tau2_guess()[0]))
    return {
        "name": name, "params": full, "seed": seed,
        "group": data.group.tolist(), "x": data.x[:, 0].tolist(),
        "n": gd.n[0].tolist(), "xsum": gd.xsum[0].tolist(), "ssw": float(gd.ssw[0]),
        "z": gd.z[0].tolist(), "y": gd.y[0].tolist(),
        "priors": pri, "stan": {**STAN, "seed": 1000 + seed},
    }


def diagnostic_draws() -> pd.DataFrame:
    """Synthetic chains covering the diagnostics' branches (long format)."""
    rng = np.random.default_rng(2026)

    def ar(chains: int, n: int, phi: float, shift=0.0) -> np.ndarray:
        e = rng.standard_normal((chains, n))
        x = np.empty_like(e)
        x[:, 0] = e[:, 0] / np.sqrt(max(1 - phi * phi, 1e-3))
        for t in range(1, n):
            x[:, t] = phi * x[:, t - 1] + e[:, t]
        return x + np.asarray(shift).reshape(-1, 1)

    series = {
        "ar06_4x1000": ar(4, 1000, 0.6),
        "ar09_2x999": ar(2, 999, 0.9),
        "ar03_3x254": ar(3, 254, 0.3),
        "iid_1x100": ar(1, 100, 0.0),
        "anti_2x200": ar(2, 200, -0.7),
        "stuck_2x400": ar(2, 400, 0.5, shift=[0.0, 3.0]),
        "ties_4x250": np.round(ar(4, 250, 0.4), 1),
        "skew_2x500": np.exp(ar(2, 500, 0.7)),
        "short_2x10": ar(2, 10, 0.2),
        "short_3x13": ar(3, 13, 0.5),
    }
    rows = []
    for name, x in series.items():
        C, N = x.shape
        rows.append(pd.DataFrame({"series": name, "chain": np.repeat(np.arange(1, C + 1), N),
                                  "iter": np.tile(np.arange(1, N + 1), C),
                                  "value": x.reshape(-1)}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    if shutil.which("Rscript") is None:
        sys.exit("Rscript not found: install R with rstan and jsonlite "
                 "(apt-get install r-cran-rstan r-cran-jsonlite) to regenerate the fixtures; "
                 "the tests use the committed files in tests/fixtures/bayes.")
    OUT.mkdir(parents=True, exist_ok=True)
    diagnostic_draws().to_csv(OUT / "diag_draws.csv", index=False, float_format="%.17g")
    script = str(ROOT / "tools" / "r" / "bayes_stan.R")
    subprocess.run(["Rscript", script, "diagnostics", str(OUT)], check=True)
    names = sys.argv[1:] or list(CASES)
    for name in names:
        params, seed = CASES[name]
        with open(OUT / f"{name}.json", "w") as f:
            json.dump(case_record(name, params, seed), f)
    subprocess.run(["Rscript", script, "stan", str(OUT), *names], check=True)


if __name__ == "__main__":
    main()

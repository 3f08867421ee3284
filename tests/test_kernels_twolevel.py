"""Two-level ML kernels (models/twolevel*): lavaan agreement, bit-identity, scale.

One x: the reference numbers in ``tests/fixtures/sem/*.json`` (lavaan 0.6-14, both
``fixed.x`` settings; ``tools/r/sem_fixtures.R``) and ``tests/fixtures/sem2level/*.json``
(balanced, unbalanced, several z, low ICC; ``tools/make_sem2level_fixtures.py``).
Tolerances are the issue's: estimates 1e-4, SEs 1e-3 (observed: below 4e-5 and 7e-6).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.core.status import Reason
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models.twolevel import _z_loglik, fit_two_level
from micromacro_sim.models.twolevel_lavaan import conditional_objective, lavaan_h1_moments
from micromacro_sim.models.twolevel_multi import prepare_multi
from tests.fastcheck import make_batch

FIX = Path(__file__).parent / "fixtures"
ONE = ["row16", "high_icc", "g50_low_icc", "unbalanced"]
NEW = ["balanced_z1", "unbalanced_z1", "unbalanced_z3", "low_icc_z2"]
TERMS = ("y~1@2", "y~z@2", "y~x@2")


def load_one(name: str, folder: str = "sem") -> tuple[Dataset, dict]:
    xd = pd.read_csv(FIX / folder / f"{name}_x.csv")
    gd = pd.read_csv(FIX / folder / f"{name}_g.csv")
    zs = tuple(c for c in gd.columns if c not in ("group", "y"))
    data = Dataset(group=xd.group.to_numpy(), x=xd.x.to_numpy(), y=gd.y.to_numpy(),
                   z=gd[list(zs)].to_numpy().reshape(len(gd), len(zs)), z_names=zs)
    with open(FIX / folder / f"{name}.json") as fh:
        return data, json.load(fh)


def extreme(seed: int) -> Dataset:
    """A dataset of a tiny-reliability design where Heywood cases are common."""
    sc = Scenario.from_params(dict(n_groups=50, group_size=5, icc=0.05, r_zxi=0.3))
    return generate(sc, np.random.default_rng(seed))


def _cases():
    return [(n, "sem") for n in ONE] + [(n, "sem2level") for n in NEW]


@pytest.mark.parametrize(("name", "folder"), _cases())
@pytest.mark.parametrize(("option", "key"), [(False, "sem_2level_free"),
                                             (True, "sem_2level")])
def test_against_lavaan(name, folder, option, key):
    # default: the joint ML (lavaan fixed.x = FALSE) in estimates and SEs;
    # lavaan_fixed_x: lavaan's default (moments fixed at its EM H1 fit)
    data, ref = load_one(name, folder)
    r = ref[key]
    assert r["converged"]
    res = get_estimator("sem_2level", lavaan_fixed_x=option).fit(data)
    assert res.ok and res.df_resid is None and set(res.bse) == {"classical"}
    terms = ["y~1@2", *(f"y~{z}@2" for z in data.z_names), "y~x@2"]
    # low_icc_z2, joint ML: lavaan's optimizer stops on a flat likelihood 7.4e-7 below
    # ours (the log-likelihood check below), 7e-4 away in the estimates; elsewhere the
    # tolerances are the 1e-4 / 1e-3
    tol = 1e-3 if (name, option) == ("low_icc_z2", False) else 1e-4
    np.testing.assert_allclose(res.params, [r["est"][t] for t in terms], atol=tol)
    if not option and "logl" in r:  # the older one-x fixtures have no logl
        G, N, q = data.n_groups, data.n_persons, data.n_z
        fit = fit_two_level(data)
        ll = (fit.loglik + _z_loglik(data.z, fit.mu_z, fit.s_zz)
              - 0.5 * np.log(2 * np.pi) * (N + G * (1 + q)) - 0.5 * np.log(data.sizes).sum())
        assert r["logl"] - 1e-9 <= ll <= r["logl"] + 1e-5
    # (SEs at lavaan's early stop differ by more than 1e-3 in that one case)
    np.testing.assert_allclose(res.se(), [r["se"][t] for t in terms], atol=10 * tol)
    e = res.extras
    assert e["sigma_w"] == pytest.approx(r["est"]["x~~x@1"], abs=tol, rel=tol)
    assert e["sigma2_e"] == pytest.approx(r["est"]["y~~y@2"], abs=tol)
    assert e["var_xb"] == pytest.approx(r["est"]["x~~x@2"], abs=tol)


@pytest.mark.parametrize("name", ONE)
def test_lavaan_em_moments(name):
    data, ref = load_one(name)
    est = ref["sem_2level"]["est"]
    want = [est["z~1@2"], est["z~~z@2"], est["z~~x@2"], est["x~~x@2"], est["x~1@2"]]
    np.testing.assert_allclose(lavaan_h1_moments(data), want, atol=1e-4)
    # the joint ML's mean of x^B is the grand mean (balanced); lavaan's is not
    if data.balanced:
        assert abs(fit_two_level(data).mu_x - data.x.mean()) < 1e-8
        assert abs(want[-1] - data.x.mean()) > 1e-4


@pytest.mark.parametrize("name", ["row16", "high_icc", "g50_low_icc"])
def test_balanced_closed_form(name):
    # balanced groups: ML is closed form (within variance SSW/(N-G), between variance
    # Var(xbar) - sigma_w/n with denominator G, mean of x the grand mean)
    data, _ = load_one(name)
    fit = fit_two_level(data)
    G, n = data.n_groups, int(data.sizes[0])
    xbar = data.xbar[:, 0]
    w = data.x[:, 0] - np.repeat(xbar, n)
    sw = w @ w / (G * (n - 1))
    assert fit.sigma_w == pytest.approx(sw, rel=1e-10)
    assert fit.s_xx == pytest.approx(np.var(xbar) - sw / n, rel=1e-8)


@pytest.mark.parametrize("option", [False, True])
def test_negative_between_variance_is_flagged(option):
    res = get_estimator("sem_2level", lavaan_fixed_x=option).fit(extreme(1))
    assert not res.admissible and Reason.NEGATIVE_VARIANCE in res.reason_code
    assert np.all(np.isnan(res.se())) and np.all(np.isfinite(res.params))


def _crosscheck_draw(design: str, i: int) -> Dataset:
    path = Path(__file__).resolve().parents[1] / "tools" / "crosscheck_r.py"
    spec = importlib.util.spec_from_file_location("crosscheck_r", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.draw(design, i)


def test_fixed_x_off_the_bound_the_joint_ml_sits_on():
    # crosscheck dataset low_icc_022: the joint ML has Var(e) on the zero bound (flagged,
    # as lavaan's fixed.x = FALSE fails its post check), lavaan's default is interior; its
    # conditional ML must not start from (and stall at) the joint solution
    data = _crosscheck_draw("low_icc", 22)
    with open(FIX / "sem2level" / "crosscheck_low_icc_022.json") as fh:
        ref = json.load(fh)
    joint = get_estimator("sem_2level").fit(data)
    assert not ref["sem_2level_free"]["post_check"]
    assert Reason.NEGATIVE_VARIANCE in joint.reason_code
    r = ref["sem_2level"]
    assert r["converged"] and r["post_check"]
    res = get_estimator("sem_2level", lavaan_fixed_x=True).fit(data)
    assert res.ok and res.converged, res.reason
    terms = ["y~1@2", "y~z1@2", "y~x@2"]
    # flat likelihood (SE of b_x 2.9): lavaan stops 1.4e-8 above the minimum, 4.7e-4 away
    # in b_x; ours must be at least as good on the objective both minimize
    np.testing.assert_allclose(res.params, [r["est"][t] for t in terms], atol=1e-3)
    np.testing.assert_allclose(res.se(), [r["se"][t] for t in terms], atol=1e-3)
    e = res.extras
    assert e["sigma2_e"] == pytest.approx(r["est"]["y~~y@2"], abs=1e-3)
    assert e["sigma_w"] == pytest.approx(r["est"]["x~~x@1"], abs=1e-3)
    assert e["var_xb"] == pytest.approx(r["est"]["x~~x@2"], abs=1e-6)
    d, moments = prepare_multi(data), lavaan_h1_moments(data)
    ours = np.array([e["sigma_w"], *res.params, e["sigma2_e"]])
    theirs = np.array([r["est"][t] for t in ["x~~x@1", *terms, "y~~y@2"]])
    assert (conditional_objective(d, moments, ours)
            <= conditional_objective(d, moments, theirs) + 1e-9)


DESIGNS = {
    "balanced": dict(n_groups=40, group_size=6, icc=0.1, r_zxi=0.3),
    "unbalanced": dict(n_groups=40, group_size={"uniform": [2, 12]}, icc=0.1, r_zxi=0.3,
                       n_z=2),
    "unbalanced_low_icc": dict(n_groups=30, group_size={"uniform": [2, 6]}, icc=0.05,
                               r_zxi=0.0),
}


@pytest.mark.parametrize("design", list(DESIGNS))
def test_bitwise_identical_across_chunk_sizes(design):
    # a replication's numbers do not depend on the replications sharing its batch
    datasets = make_batch(DESIGNS[design], 15).datasets
    est = get_estimator("sem_2level")
    out = {}
    for chunk in (1, 7, 1000):
        parts = [est.fit_batch(Batch.from_datasets(datasets[i : i + chunk]), "fast")
                 for i in range(0, len(datasets), chunk)]
        out[chunk] = (np.concatenate([p.params for p in parts]),
                      np.concatenate([p.bse["classical"] for p in parts]),
                      sum((list(p.reason) for p in parts), []))
    for chunk in (1, 7):
        assert np.array_equal(out[chunk][0], out[1000][0], equal_nan=True)
        assert np.array_equal(out[chunk][1], out[1000][1], equal_nan=True)
        assert out[chunk][2] == out[1000][2]


def _big(G: int, seed: int = 5) -> Dataset:
    rng = np.random.default_rng(seed)
    n = rng.integers(5, 16, size=G)
    z = rng.normal(size=(G, 1))
    xi = 0.3 * z[:, 0] + rng.normal(0, np.sqrt(0.91), G)
    y = 0.3 + 0.3 * z[:, 0] + 0.3 * xi + rng.normal(0, 0.6, G)
    x = np.repeat(xi, n) + rng.normal(0, 3, n.sum())
    return Dataset(group=np.repeat(np.arange(G), n), x=x, y=y, z=z)


@pytest.mark.parametrize("G", [12_500, 125_000])
def test_large_dataset_converges_with_ses(G):
    # about 125,000 and 1.25 million rows: the convergence criterion is per person
    data = _big(G)
    res = get_estimator("sem_2level").fit(data)
    assert res.ok and res.converged, res.reason
    assert np.all(np.isfinite(res.se())) and np.all(res.se() < 0.05)
    assert abs(res.params[-1] - 0.3) < 6 * res.se()[-1]


def test_no_runtime_warnings_and_nan_never_admissible(recwarn):
    est = get_estimator("sem_2level")
    for seed in range(12):
        res = est.fit(extreme(seed))
        if not np.all(np.isfinite(res.params)):
            assert not res.admissible
    batch = make_batch(dict(n_groups=20, group_size={"uniform": [2, 3]}, icc=0.02,
                            r_zxi=0.3), 10)
    fast = est.fit_batch(batch, "fast")
    assert not np.any(np.isnan(fast.params).any(axis=1) & fast.admissible)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]

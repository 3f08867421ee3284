"""Local SAM on incomplete members against lavaan 0.6.14's ``sam(..., missing = "ml")``.

Reference numbers in tests/fixtures/sam_fiml (``tools/make_sam_fiml_fixtures.py``, R script
tools/r/sam_fiml_check.R). Tolerances as for the complete-data method: lavaan's
optimizer (nlminb) stops at a relative gradient of about 1e-6 (its measurement and
structural estimates carry errors of order 1e-7 here), so estimates are compared to
1e-4 and standard errors to 1e-3. The EM moments follow lavaan's iterations and agree
to rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.h1_em import em_moments
from micromacro_sim.models.sam import sam_fit
from micromacro_sim.models.sam_fiml import sam_fit_missing
from micromacro_sim.models.sam_fiml_joint import joint_model
from micromacro_sim.models.sam_fiml_lik import fiml_derivatives, fiml_loglik
from micromacro_sim.models.sam_fiml_mm import Measurement, measurement_information

FIX = Path(__file__).parent / "fixtures" / "sam_fiml"
FSR = Path(__file__).parent / "fixtures" / "fsr"
CASES = sorted(pd.read_csv(FIX / "cases.csv")["name"])
RUNS = {"sam": ("standard", "observed"), "sam_expected": ("standard", "expected"),
        "sam_none": ("none", "observed"), "sam_none_expected": ("none", "expected")}
EST_TOL, SE_TOL = 1e-4, 1e-3


def load(name: str) -> tuple[tuple[np.ndarray, ...], list[str], pd.DataFrame, pd.DataFrame]:
    df = pd.read_csv(FIX / f"{name}.csv")
    xs = [c for c in df if c.startswith("x")]
    zs = [c for c in df if c.startswith("z")]
    X = df[xs].to_numpy()
    args = (X, ~np.isnan(X), df["y"].to_numpy(), df[zs].to_numpy())
    ref = pd.read_csv(FIX / f"{name}_lavaan.csv", keep_default_na=False, na_values=["NA"])
    status = pd.read_csv(FIX / f"{name}_status.csv", keep_default_na=False)
    return args, zs, ref, status.set_index("method")


def pick(ref: pd.DataFrame, method: str, lhs: str, op: str, rhs: str = "") -> pd.Series:
    row = ref[(ref.method == method) & (ref.lhs == lhs) & (ref.op == op) & (ref.rhs == rhs)]
    assert len(row) == 1, (method, lhs, op, rhs)
    return row.iloc[0]


def fit(args: tuple, method: str) -> dict:
    bounds, information = RUNS[method]
    return sam_fit_missing(*args, bounds=bounds, information=information)


@pytest.mark.parametrize("method", RUNS)
@pytest.mark.parametrize("name", CASES)
def test_matches_lavaan(name, method):
    args, zs, ref, status = load(name)
    r = fit(args, method)
    if status.loc[method, "status"] == "error":
        assert not r["estimable"] and r["reason"] is Reason.SPARSE_POSITION
        assert np.all(np.isnan(r["params"]))
        return
    for k, term in enumerate([*zs, "lv"], start=1):
        row = pick(ref, method, "y", "~", term)
        assert r["params"][k] == pytest.approx(row.est, abs=EST_TOL), term
        if np.isnan(row.se):  # lavaan: the observed information gives a negative variance
            assert np.isnan(r["se"][k]) and Reason.NON_FINITE in r["reasons"]
        else:
            assert r["se"][k] == pytest.approx(row.se, abs=SE_TOL), term
    names = ["lv", "y", *zs]
    for i in range(len(names)):
        for j in range(i + 1):
            lavaan = pick(ref, method, "veta", "~~", f"{names[i]} {names[j]}").est
            assert r["veta"][i, j] == pytest.approx(lavaan, abs=EST_TOL)
    assert r["psi_y"] == pytest.approx(pick(ref, method, "y", "~~", "y").est, abs=EST_TOL)
    assert r["lambda"] == pytest.approx(pick(ref, method, "lambda", "").est, rel=1e-5)
    assert r["v"] == pytest.approx(pick(ref, method, "mm", "v").est, rel=1e-5)
    assert r["psi_mm"] == pytest.approx(pick(ref, method, "mm", "psi").est, abs=EST_TOL)
    nu = ref[(ref.method == method) & (ref.lhs == "mm") & (ref.op == "nu")].est.to_numpy()
    np.testing.assert_allclose(r["nu"], nu, atol=EST_TOL)
    v_upper = pick(ref, method, "mm", "v_upper").est
    if abs(pick(ref, method, "mm", "v").est - v_upper) < 1e-12 * v_upper:
        # v at lavaan's bound: the x-only EM variance of x_1, to rounding
        assert r["v"] == pytest.approx(v_upper, rel=1e-10)
    # lavaan's bounds are active when they move its estimates (by far more than 1e-4)
    v_free, psi_free = (pick(ref, "sam_none", "mm", k).est for k in ("v", "psi"))
    moved = abs(v_free - r["v"]) > 1e-4 * r["v"] or abs(psi_free - r["psi_mm"]) > 1e-4
    assert r["bounded"] == moved


@pytest.mark.parametrize("name", CASES)
def test_em_moments_follow_lavaan(name):
    """The h1 moments of [x, y, Z]: lavaan's EM iterations, to rounding (1e-10; 1e-5 when
    EM runs into a near-singular matrix, where rounding grows over its 500 iterations)."""
    args, zs, ref, status = load(name)
    if status.loc["sam", "status"] == "error":
        return
    r = fit(args, "sam_expected")
    tol = 1e-5 if Reason.SAMPLE_COV_NOT_PD in r["reasons"] else 1e-10
    cols = [f"x{k + 1}" for k in range(args[0].shape[1])] + ["y", *zs]
    h1 = ref[ref.method == "h1"]
    for _, row in h1.iterrows():
        i = cols.index(row.lhs)
        ours = r["mu_h1"][i] if row.op == "~1" else r["sigma_h1"][i, cols.index(row.rhs)]
        assert ours == pytest.approx(row.est, rel=tol, abs=tol * 1e-3), (row.lhs, row.rhs)


@pytest.mark.parametrize("name", CASES)
def test_verdicts_match_lavaan_messages(name):
    """lavaan's messages, and its numbers where it is silent: an error -> no estimates;
    EM iteration limit -> not converged; an EM eigenvalue below 1e-5 or 0% coverage ->
    sample covariance not PD; lambda <= 1 -> not PD; a negative unbounded factor
    variance (lavaan's sam_none) -> negative variance."""
    args, _, ref, status = load(name)
    for method in RUNS:
        r = fit(args, method)
        msg = status.loc[method, "message"]
        if status.loc[method, "status"] == "error":
            assert r["reasons"] == (Reason.SPARSE_POSITION,)
            continue
        reasons = set(r["reasons"])
        assert (Reason.NOT_CONVERGED in reasons) == ("Maximum number of iterations" in msg)
        assert (Reason.SAMPLE_COV_NOT_PD in reasons) == (
            "smallest eigenvalue" in msg or "have 0% coverage" in msg)
        assert (Reason.NOT_POSITIVE_DEFINITE in reasons) == (
            pick(ref, method, "lambda", "").est <= 1)
        psi_free = pick(ref, "sam_none", "mm", "psi").est
        psi = pick(ref, method, "mm", "psi").est
        assert (Reason.NEGATIVE_VARIANCE in reasons) == (psi_free <= 0 or psi <= 0)
        assert r["reason"] == (r["reasons"][0] if r["reasons"] else None)


def test_cases_cover_the_brief():
    """Bounds binding, veta.force.pd, negative variance, one and two Z, G 30..200."""
    seen = {"bounded": False, "adjusted": False, "negative": False}
    for name in CASES:
        args, _, _, status = load(name)
        if status.loc["sam", "status"] == "error":
            continue
        r = fit(args, "sam")
        seen["bounded"] |= r["bounded"]
        seen["adjusted"] |= r["adjusted"] and r["psi_mm_unbounded"] > 0
        seen["negative"] |= Reason.NEGATIVE_VARIANCE in r["reasons"]
    assert all(seen.values()), seen


def _complete_datasets() -> list[tuple[str, Dataset, pd.DataFrame]]:
    out = []
    for path in [*sorted(FSR.glob("*.csv")), FIX / "complete_g50.csv"]:
        if path.stem.endswith(("_lavaan", "_zscores", "cases")):
            continue
        d = pd.read_csv(path)
        xs = [c for c in d if c.startswith("x")]
        zs = [c for c in d if c.startswith("z")]
        G, n = len(d), len(xs)
        data = Dataset(group=np.repeat(np.arange(G), n), x=d[xs].to_numpy().ravel(),
                       y=d["y"].to_numpy(), z=d[zs].to_numpy(), z_names=tuple(zs))
        out.append((path.stem, data, d[xs]))
    return out


@pytest.mark.parametrize("bounds", ["standard", "none"])
def test_complete_data_equals_sam_fit(bounds):
    """With every member present (and the expected information, the default) the
    numbers are the complete-data method's (its information by central differences is
    exact to about 1e-10: the structural vcov, with entries that are 0 in theory, is
    compared to 1e-8)."""
    keys = ["params", "se", "veta", "lambda", "v", "psi_mm", "psi_mm_unbounded",
            "v_unbounded", "psi_y"]
    for name, data, X in _complete_datasets():
        a = sam_fit(data, bounds=bounds)
        b = sam_fit_missing(X.to_numpy(), np.ones(X.shape, bool), data.y, data.z,
                            bounds=bounds)
        for k in keys:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=0, err_msg=f"{name} {k}")
        scale = np.max(np.abs(a["vcov_struct"]))
        np.testing.assert_allclose(b["vcov_struct"], a["vcov_struct"], rtol=1e-8,
                                   atol=1e-10 * scale, err_msg=name)
        assert (b["bounded"], b["adjusted"]) == (a["bounded"], a["adjusted"]), name


def test_complete_data_observed_information_is_lavaans():
    """lavaan's missing = "ml" path on complete data: the same estimates, SEs from the
    observed information (not the complete-data method's expected one)."""
    args, zs, ref, _ = load("complete_g50")
    obs = fit(args, "sam")
    exp = fit(args, "sam_expected")
    np.testing.assert_allclose(obs["params"], exp["params"], rtol=1e-12)
    assert not np.allclose(obs["se"][1:], exp["se"][1:], rtol=1e-6, atol=0)
    sem = [pick(ref, "sem", "y", "~", t).est for t in [*zs, "lv"]]
    free = fit(args, "sam_none_expected")
    np.testing.assert_allclose(free["params"][1:], sem, atol=EST_TOL)


def test_fiml_derivatives_match_finite_differences():
    args, _, ref, _ = load("mar_z_g60")
    X, M, y, z = args
    r = fit(args, "sam")
    K, q = X.shape[1], z.shape[1]
    data = np.column_stack([np.where(M, X, 0.0), y, z])
    dmask = np.column_stack([M, np.ones((len(y), 1 + q), bool)])
    phi = r["veta"][np.ix_([0, 2], [0, 2])]
    coef = np.array([r["params"][2], r["params"][1]])
    theta = (r["nu"], r["v"], coef, r["psi_y"], phi, y.mean() + 0.1, z.mean(axis=0) - 0.05)

    def loglik(t: np.ndarray) -> float:
        nu, v, c, py, ph = t[:K], t[K], t[K + 1 : K + 3], t[K + 3], t[K + 4 : K + 7]
        phim = np.array([[ph[0], ph[1]], [ph[1], ph[2]]])
        mu, sig = joint_model(K, nu, v, c, py, phim, t[K + 7], t[K + 8 :])[:2]
        return fiml_loglik(data, dmask, mu, sig)

    flat = np.concatenate([theta[0], [theta[1]], theta[2], [theta[3]],
                           phi[np.tril_indices(2)], [theta[5]], theta[6]])
    ll, grad, info = fiml_derivatives(data, dmask, *joint_model(K, *theta))
    assert ll == pytest.approx(loglik(flat), rel=1e-12)
    h = 1e-5
    eye = np.eye(len(flat))
    num_grad = np.array([(loglik(flat + h * e) - loglik(flat - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(grad, num_grad, rtol=1e-6, atol=1e-6)
    h = 1e-4
    num_hess = np.array([[(loglik(flat + h * a + h * b) - loglik(flat + h * a - h * b)
                           - loglik(flat - h * a + h * b) + loglik(flat - h * a - h * b))
                          / (4 * h * h) for b in eye] for a in eye])
    np.testing.assert_allclose(-info, num_hess, rtol=1e-4, atol=1e-3)


def test_measurement_step_is_the_constrained_optimum():
    """KKT at the bounded solution: zero gradient in nu and psi, and the gradient of v
    pointing out of the box at its active upper bound."""
    args, _, _, _ = load("mar_g30_bound")
    X, M = args[0], args[1]
    r = fit(args, "sam_expected")
    assert r["bounded"]
    grad, _ = measurement_information(X, M, Measurement(r["nu"], r["v"], r["psi_mm"], True))
    K = X.shape[1]
    scale = np.abs(grad).max()
    assert np.all(np.abs(grad[:K]) < 1e-8 * scale) and abs(grad[K + 1]) < 1e-8 * scale
    assert grad[K] > 0  # the log-likelihood still increases with v at v = Var(x_1)


def _tiny(mask: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    G, K = mask.shape
    xi = rng.normal(size=G)
    x = xi[:, None] + rng.normal(size=(G, K))
    z = (xi + rng.normal(size=G))[:, None]
    return x, mask, xi + rng.normal(size=G), z


def test_data_verdicts():
    G = 40
    mask = np.ones((G, 4), bool)
    mask[1:, 3] = False  # position 4 observed in one group: lavaan stops
    r = sam_fit_missing(*_tiny(mask))
    assert r["reasons"] == (Reason.SPARSE_POSITION,) and not r["estimable"]
    x, mask, y, z = _tiny(np.ones((G, 4), bool))
    x[:, 2] = 1.5  # a position without variance
    assert sam_fit_missing(x, mask, y, z)["reason"] is Reason.SPARSE_POSITION
    mask = np.ones((G, 4), bool)
    mask[0::2, 3] = mask[1::2, 2] = False  # positions 3 and 4 never together
    r = sam_fit_missing(*_tiny(mask))
    assert r["estimable"] and Reason.SAMPLE_COV_NOT_PD in r["reasons"]
    assert "never observed in the same group" in r["message"]


def test_no_z_and_empty_rows():
    """q = 0 works; a group without any observed member only enters the h1 moments
    (lavaan drops it from the measurement fit)."""
    x, mask, y, z = _tiny(np.random.default_rng(1).random((80, 5)) > 0.2)
    r0 = sam_fit_missing(x, mask, y, np.zeros((80, 0)))
    assert r0["params"].shape == (2,) and np.all(np.isfinite(r0["se"]))
    mask[3] = False
    r = sam_fit_missing(x, mask, y, z)
    assert np.all(np.isfinite(r["params"])) and r["params"].shape == (3,)


def test_em_complete_data_is_the_ml_covariance():
    x, mask, y, z = _tiny(np.ones((30, 4), bool))
    em = em_moments(x, mask)
    assert em.converged and em.n_iter == 2
    np.testing.assert_allclose(em.sigma, np.cov(x, rowvar=False, ddof=0), rtol=1e-12)


def test_invalid_arguments():
    args = _tiny(np.ones((20, 3), bool))
    with pytest.raises(ValueError, match="bounds"):
        sam_fit_missing(*args, bounds="loose")
    with pytest.raises(ValueError, match="information"):
        sam_fit_missing(*args, information="hessian")
    x, mask, y, z = args
    mask[:, 1] = False
    with pytest.raises(ValueError, match="K >= 2"):
        sam_fit_missing(x, mask, y, z)


def test_fixture_datasets_are_the_generators():
    """The committed datasets are the generator's draws for the listed scenarios."""
    import importlib.util
    import json

    script = FIX.parents[2] / "tools" / "make_sam_fiml_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for _, row in pd.read_csv(FIX / "cases.csv").iterrows():
        assert mod.CASES[row["name"]] == (json.loads(row["params"]), row["seed"])
        ours = mod.wide_frame(json.loads(row["params"]), int(row["seed"]), row["name"])
        committed = pd.read_csv(FIX / f"{row['name']}.csv")
        pd.testing.assert_frame_equal(ours, committed, check_exact=False, rtol=1e-15)

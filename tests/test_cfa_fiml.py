"""Full-information ML of the one-factor CFA on wide data with absent members
(:mod:`micromacro_sim.models.cfa_fiml`): lavaan's ``missing = "fiml"`` numbers on datasets
of the package's generator, the complete-data ML optimum, the batch arithmetic and the
O(K) likelihood.

The lavaan numbers are committed under ``tests/fixtures/cfa_fiml/`` (``lavaan_fits.csv``,
``lavaan_scores.csv``); ``python tools/make_cfa_fiml_fixtures.py`` rebuilds them with
``tools/r/cfa_fiml_check.R`` (needs Rscript with lavaan). The datasets are not stored: the
tests redraw them and check the checksum ``sum_x``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from micromacro_sim.core.status import Reason  # noqa: E402
from micromacro_sim.design.scenario import Scenario  # noqa: E402
from micromacro_sim.generate.dgp import generate  # noqa: E402
from micromacro_sim.models import cfa_fiml_derivs as fd  # noqa: E402
from micromacro_sim.models.cfa import fit_cfa_batch  # noqa: E402
from micromacro_sim.models.cfa_fiml import (  # noqa: E402
    cfa_fiml_scores,
    fit_cfa_fiml,
    fit_cfa_fiml_batch,
)

FIXTURES = ROOT / "tests" / "fixtures" / "cfa_fiml"
FITS, SCORES = FIXTURES / "lavaan_fits.csv", FIXTURES / "lavaan_scores.csv"

DESIGNS = {
    "pois8": dict(n_groups=60, group_size={"poisson": 8, "min": 2}, icc=0.2, r_zxi=0.3),
    "unif": dict(n_groups=100, group_size={"uniform": [3, 12]}, icc=0.3, r_zxi=0.3),
    "mcar": dict(n_groups=100, group_size=8, missing_mcar=0.2, icc=0.2, r_zxi=0.3),
    "mar": dict(n_groups=200, group_size=6, icc=0.5, r_zxi=0.3,
                missing_mar={"on": "z", "rate": 0.2, "strength": 1.0}),
    "mcar_low": dict(n_groups=30, group_size=5, missing_mcar=0.2, icc=0.1, r_zxi=0.3),
    "unif_low": dict(n_groups=40, group_size={"uniform": [2, 6]}, icc=0.1, r_zxi=0.3),
    "mar_low": dict(n_groups=50, group_size=6, icc=0.1, r_zxi=0.3,
                    missing_mar={"on": "z", "rate": 0.3, "strength": 1.0}),
}

#: (design, seed, what lavaan and the fit do). "same": both converge to one solution
#: (estimates, scores, log-likelihood and verdicts compared); "higher": both converge to
#: inadmissible solutions, the fit's of higher likelihood; "lower": lavaan stops at an
#: admissible optimum, the fit keeps a lower inadmissible one and says so; "stalls":
#: lavaan does not converge, nor does the positive start; "refused": lavaan refuses a
#: column observed once (the likelihood is unbounded), the fit does not converge;
#: "crosses": lavaan converges to the lower negative-factor-variance solution (the kept
#: one), while the positive start runs to an infinite residual variance and stops there.
DATASETS = [
    ("pois8", 5, "same"), ("unif", 0, "same"), ("unif", 1, "same"), ("mcar", 0, "same"),
    ("mcar", 3, "same"), ("mar", 0, "same"), ("mar", 2, "same"),
    ("mar_low", 111, "same"), ("mcar_low", 100, "same"), ("mcar_low", 120, "same"),
    ("unif_low", 112, "same"), ("unif_low", 108, "higher"), ("mcar_low", 114, "lower"),
    ("unif_low", 115, "lower"),
    ("unif_low", 103, "stalls"), ("mar_low", 102, "stalls"), ("pois8", 0, "refused"),
    ("mcar_low", 102, "crosses"),
]
ESTIMATE_TOL = 1e-4
SCORE_TOL = 1e-4


def name(design: str, seed: int) -> str:
    return f"{design}_s{seed}"


def draw(design: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's member-position layout (values NaN where absent, mask)."""
    sc = Scenario.from_params(DESIGNS[design])
    return generate(sc, np.random.default_rng(seed)).wide_positions(0)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(v: str) -> float:
    return float("nan") if v in ("", "NA") else float(v)


@pytest.fixture(scope="module")
def lavaan() -> dict[str, dict]:
    """lavaan's fit per dataset, with its scores and our fit of the redrawn data."""
    fits = {r["dataset"]: r for r in _rows(FITS)}
    scores: dict[str, list] = {}
    for r in _rows(SCORES):
        scores.setdefault(r["dataset"], []).append(r)
    out = {}
    for design, seed, kind in DATASETS:
        key = name(design, seed)
        row = fits[key]
        v, m = draw(design, seed)
        K = v.shape[1]
        assert int(row["K"]) == K
        assert np.nansum(v) == pytest.approx(float(row["sum_x"]), rel=1e-12, abs=1e-9)
        sc = sorted(scores.get(key, []), key=lambda s: int(s["group"]))
        out[key] = dict(
            kind=kind, values=v, mask=m, fit=fit_cfa_fiml_batch(v[None], m[None]),
            error=row["error"], converged=row["converged"] == "TRUE",
            post_check=row["post_check"] == "TRUE", logl=_num(row["logl"]),
            loadings=np.array([_num(row[f"lambda{j + 1}"]) for j in range(K)]),
            residual_variances=np.array([_num(row[f"theta{j + 1}"]) for j in range(K)]),
            factor_variance=_num(row["psi"]),
            intercepts=np.array([_num(row[f"nu{j + 1}"]) for j in range(K)]),
            regression=np.array([_num(s["regression"]) for s in sc]),
            bartlett=np.array([_num(s["bartlett"]) for s in sc]),
        )
    return out


def _of(lavaan: dict, *kinds: str) -> list[tuple[str, dict]]:
    return [(k, d) for k, d in lavaan.items() if d["kind"] in kinds]


def _codes(flags) -> set[Reason]:
    return {f.code for f in flags}


# ------------------------------------------------------------------ against lavaan


def test_the_fixture_covers_the_designs_asked_for(lavaan):
    assert len(_of(lavaan, "same")) >= 8
    sizes = {d["values"].shape[0] for _, d in lavaan.items()}
    assert min(sizes) == 30 and max(sizes) == 200
    heywood = [k for k, d in _of(lavaan, "same") if not d["post_check"]]
    assert len(heywood) >= 2  # lavaan reports a negative variance there


def test_estimates_match_lavaan(lavaan):
    for key, d in _of(lavaan, "same", "crosses"):
        fit = d["fit"].fit(0)
        for field in ("loadings", "residual_variances", "factor_variance", "intercepts"):
            np.testing.assert_allclose(getattr(fit, field), d[field], rtol=0,
                                       atol=ESTIMATE_TOL, err_msg=f"{key}: {field}")


def test_log_likelihood_is_lavaans_and_never_below_it(lavaan):
    """fmin is minus the log-likelihood per group; lavaan's optimum is no higher."""
    for key, d in _of(lavaan, "same", "crosses", "higher", "lower"):
        loglik = -d["fit"].fmin[0] * d["values"].shape[0]
        assert loglik >= d["logl"] - 1e-9, key
        if d["kind"] in ("same", "crosses"):
            assert loglik == pytest.approx(d["logl"], abs=1e-6), key
        else:
            assert loglik > d["logl"] + 1e-3, key


def test_scores_match_lavpredict(lavaan):
    for key, d in _of(lavaan, "same", "crosses"):
        for method, col in (("regression", "regression"), ("bartlett", "bartlett")):
            s = cfa_fiml_scores(d["fit"], d["values"][None], d["mask"][None], method)[0]
            np.testing.assert_allclose(s, d[col], rtol=0, atol=SCORE_TOL,
                                       err_msg=f"{key}: {method}")


def test_verdicts_match_lavaan(lavaan):
    """lavaan's converged and post.check against the positive start's verdict (and the
    kept solution's where both are lavaan's solution)."""
    for key, d in _of(lavaan, "same", "higher", "lower", "stalls"):
        fit = d["fit"].fit(0)
        codes = _codes(fit.lavaan_flags)
        stuck = {Reason.NOT_CONVERGED, Reason.MARKER_NOT_IDENTIFIED}
        assert (not codes & stuck) == d["converged"], key
        assert (not codes) == (d["converged"] and d["post_check"]), key
        if d["kind"] == "same":
            assert fit.flags == fit.lavaan_flags, key
            assert fit.converged and fit.admissible == d["post_check"], key


def test_a_lower_inadmissible_optimum_is_flagged(lavaan):
    for key, d in _of(lavaan, "lower"):
        fit = d["fit"].fit(0)
        assert d["converged"] and d["post_check"] and not fit.lavaan_flags, key
        assert Reason.LOWER_INADMISSIBLE_OPTIMUM in _codes(fit.flags), key
        assert fit.converged and not fit.admissible, key


def test_what_lavaan_refuses_does_not_converge(lavaan):
    for key, d in _of(lavaan, "refused"):
        assert "only 1 observation" in d["error"], key
        assert d["mask"].sum(axis=0).min() == 1
        fit = d["fit"].fit(0)
        assert not fit.converged and Reason.NOT_CONVERGED in _codes(fit.flags), key


def test_the_known_disagreement_through_infinity(lavaan):
    """lavaan reaches the lower negative-factor-variance solution; the positive start runs
    to an infinite residual variance instead (the kept solution is lavaan's)."""
    for key, d in _of(lavaan, "crosses"):
        fit = d["fit"].fit(0)
        assert d["converged"] and not d["post_check"], key
        assert fit.converged and fit.factor_variance < 0, key
        assert _codes(fit.flags) == {Reason.NEGATIVE_VARIANCE}, key
        assert Reason.NOT_CONVERGED in _codes(fit.lavaan_flags), key


# ------------------------------------------------------------------ complete data, batches


def _complete(reps: int, seed: int, **params) -> np.ndarray:
    base = dict(n_groups=80, group_size=6, icc=0.15, r_zxi=0.3)
    base.update(params)
    sc = Scenario.from_params(base)
    rng = np.random.default_rng(seed)
    return np.stack([generate(sc, rng).wide_positions(0)[0] for _ in range(reps)])


def test_complete_data_gives_the_ml_optimum():
    """With every cell observed the FIML optimum is fit_cfa_batch's (intercepts the means)."""
    n_ok = 0
    for X in (_complete(12, 1), _complete(12, 2, icc=0.03, n_groups=40)):
        ml = fit_cfa_batch(X)
        fiml = fit_cfa_fiml_batch(X, np.ones(X.shape, dtype=bool))
        ok = ml.converged & fiml.converged
        n_ok += ok.sum()
        for field in ("loadings", "residual_variances", "factor_variance", "intercepts"):
            np.testing.assert_allclose(getattr(fiml, field)[ok], getattr(ml, field)[ok],
                                       rtol=0, atol=1e-6, err_msg=field)
        np.testing.assert_array_equal(fiml.admissible[ok], ml.admissible[ok])
        np.testing.assert_allclose(fiml.intercepts[ok], X.mean(axis=1)[ok], atol=1e-9)
    assert n_ok >= 20


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal element by element (``==``), NaN equal to NaN."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_a_replication_is_the_same_bits_alone_and_in_any_stack():
    designs = [("mcar_low", s) for s in (100, 101, 102, 107, 112, 114, 115, 120)]
    data = [draw(d, s) for d, s in designs]
    V = np.stack([v for v, _ in data])
    M = np.stack([m for _, m in data])
    floats = ("loadings", "residual_variances", "factor_variance", "intercepts", "fmin")
    stacks = [np.arange(8), np.arange(8)[::-1], np.array([5, 1, 6]),
              np.array([2, 2, 7, 0, 3, 4])]
    alone = [fit_cfa_fiml_batch(V[r : r + 1], M[r : r + 1]) for r in range(8)]
    alone_scores = [cfa_fiml_scores(a, V[r : r + 1], M[r : r + 1])
                    for r, a in enumerate(alone)]
    for order in stacks:
        b = fit_cfa_fiml_batch(V[order], M[order])
        sc = cfa_fiml_scores(b, V[order], M[order])
        for i, r in enumerate(order):
            for field in floats:
                assert _same(getattr(b, field)[i], getattr(alone[r], field)[0]), (field, r)
            assert _same(sc[i], alone_scores[r][0])
            assert b.flags[i] == alone[r].flags[0]
            assert b.lavaan_flags[i] == alone[r].lavaan_flags[0]
            assert b.n_iter[i] == alone[r].n_iter[0]


def test_fit_cfa_fiml_is_the_batch_on_one_dataset():
    v, m = draw("mcar", 0)
    one = fit_cfa_fiml(v, m)
    row = fit_cfa_fiml_batch(v[None], m[None]).fit(0)
    np.testing.assert_array_equal(one.loadings, row.loadings)
    assert one.flags == row.flags and one.fmin == row.fmin


def test_preconditions_are_checked():
    v, m = draw("mcar", 0)
    with pytest.raises(ValueError, match="3 indicators"):
        fit_cfa_fiml(v[:, :2], m[:, :2])
    bad = m.copy()
    bad[:, 2] = False
    with pytest.raises(ValueError, match="at least one group"):
        fit_cfa_fiml(v, bad)
    with pytest.raises(ValueError, match="one shape"):
        fit_cfa_fiml_batch(v[None], m[None, :, :3])
    with pytest.raises(ValueError, match="method"):
        cfa_fiml_scores(fit_cfa_fiml_batch(v[None], m[None]), v[None], m[None], "ml")


def test_absent_cells_and_empty_groups_are_ignored():
    v, m = draw("mcar", 3)
    a = fit_cfa_fiml(np.where(m, v, 0.0), m)
    b = fit_cfa_fiml(np.where(m, v, 123.0), m)
    np.testing.assert_array_equal(a.loadings, b.loadings)
    # a group with nothing observed changes nothing but gets no score
    v2, m2 = np.vstack([v, np.zeros((1, v.shape[1]))]), np.vstack([m, np.zeros((1, m.shape[1]),
                                                                                dtype=bool)])
    c = fit_cfa_fiml_batch(v2[None], m2[None])
    np.testing.assert_allclose(c.loadings[0], a.loadings, atol=1e-10)
    np.testing.assert_allclose(c.fmin[0], a.fmin, atol=1e-12)
    assert np.isnan(cfa_fiml_scores(c, v2[None], m2[None])[0, -1])


# ------------------------------------------------------------------ the O(K) likelihood


def _point(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    N, G, K = 3, 25, 5
    m = (rng.random((N, G, K)) < 0.7).astype(float)
    x = (rng.standard_normal((N, G, K)) + rng.standard_normal((N, G, 1))) * m
    theta = np.concatenate([1 + 0.3 * rng.standard_normal((N, K)), 0.5 + rng.random((N, K)),
                            np.full((N, 1), 0.7), 0.1 * rng.standard_normal((N, K))], axis=1)
    theta[1, K + 2] = -0.05  # a Heywood case with a positive definite Sigma
    return theta, x, m, np.any(m > 0, axis=2).sum(axis=1).astype(float)


def test_the_sherman_morrison_likelihood_is_the_dense_one():
    theta, x, m, nc = _point(3)
    f = fd.evaluate(theta, x, m, nc).f
    K = x.shape[2]
    for r in range(len(theta)):
        lam, psi, phi, nu = theta[r, :K], theta[r, K : 2 * K], theta[r, 2 * K], theta[r, -K:]
        total = 0.0
        for g in range(x.shape[1]):
            o = m[r, g] > 0
            if o.any():
                sig = phi * np.outer(lam[o], lam[o]) + np.diag(psi[o])
                e = x[r, g, o] - nu[o]
                total += np.linalg.slogdet(sig)[1] + e @ np.linalg.solve(sig, e)
        assert f[r] == pytest.approx(total / nc[r], rel=1e-12)


def test_the_gradient_and_hessian_are_the_derivatives_of_f():
    theta, x, m, nc = _point(5)
    g, H = fd.derivatives(theta, fd.evaluate(theta, x, m, nc), m, nc)
    eps = 1e-6
    for k in range(theta.shape[1]):
        up, dn = theta.copy(), theta.copy()
        up[:, k] += eps
        dn[:, k] -= eps
        tu, td = fd.evaluate(up, x, m, nc), fd.evaluate(dn, x, m, nc)
        np.testing.assert_allclose(g[:, k], (tu.f - td.f) / (2 * eps), atol=1e-7)
        dg = (fd.derivatives(up, tu, m, nc)[0] - fd.derivatives(dn, td, m, nc)[0]) / (2 * eps)
        np.testing.assert_allclose(H[:, :, k], dg, atol=1e-5 * np.abs(H).max())


def test_the_far_chart_derivatives():
    """Gradient and Hessian through gamma = 1 / phi (the passage through infinity)."""
    theta, x, m, nc = _point(7)
    K = x.shape[2]
    j = np.array([2, 0, 4])
    r = np.arange(3)
    theta[:, :K] = 0.03
    theta[r, j] = 1.0
    theta[:, K : 2 * K] = 1.5
    theta[r, K + j] = [32.0, -27.0, 32.0]  # far out in the negative and positive branch
    theta[:, 2 * K] = [-28.0, 30.0, -28.0]
    assert np.all(np.isfinite(fd.evaluate(theta, x, m, nc).f))
    xi = fd.to_chart(theta, j)
    np.testing.assert_allclose(fd.from_chart(xi, j), theta, atol=1e-12)

    def grad(z):
        th = fd.from_chart(z, j)
        t = fd.evaluate(th, x, m, nc)
        return fd.chart_jacobian(z, j, *fd.derivatives(th, t, m, nc))

    g, H = grad(xi)
    eps = 1e-6
    for k in range(xi.shape[1]):
        if k in j:
            continue  # the fixed marker's entry
        up, dn = xi.copy(), xi.copy()
        up[:, k] += eps
        dn[:, k] -= eps
        fu = fd.evaluate(fd.from_chart(up, j), x, m, nc).f
        fdn = fd.evaluate(fd.from_chart(dn, j), x, m, nc).f
        np.testing.assert_allclose(g[:, k], (fu - fdn) / (2 * eps), atol=1e-7)
        free = np.ones(xi.shape[1], dtype=bool)
        free[j] = False
        dg = (grad(up)[0] - grad(dn)[0]) / (2 * eps)
        np.testing.assert_allclose(H[:, free, k], dg[:, free], atol=1e-5 * np.abs(H).max())


def test_the_information_is_the_expected_hessian():
    theta, x, m, nc = _point(9)
    K = x.shape[2]
    theta[:, K : 2 * K] = np.abs(theta[:, K : 2 * K])
    info = fd.information(theta, fd.evaluate(theta, x, m, nc), m, nc)
    for r in range(len(theta)):
        lam, psi, phi = theta[r, :K], theta[r, K : 2 * K], theta[r, 2 * K]
        dS = [phi * (np.outer(np.eye(K)[i], lam) + np.outer(lam, np.eye(K)[i]))
              for i in range(K)] + [np.diag(np.eye(K)[i]) for i in range(K)]
        dS.append(np.outer(lam, lam))
        cov, mean = np.zeros((2 * K + 1, 2 * K + 1)), np.zeros((K, K))
        for g in range(x.shape[1]):
            o = np.flatnonzero(m[r, g] > 0)
            if len(o):
                A = np.zeros((K, K))
                A[np.ix_(o, o)] = np.linalg.inv((phi * np.outer(lam, lam) + np.diag(psi))[
                    np.ix_(o, o)])
                cov += np.array([[np.trace(A @ a @ A @ b) for b in dS] for a in dS])
                mean += 2 * A
        np.testing.assert_allclose(info[r, : 2 * K + 1, : 2 * K + 1], cov / nc[r], atol=1e-12)
        np.testing.assert_allclose(info[r, 2 * K + 1 :, 2 * K + 1 :], mean / nc[r], atol=1e-12)
        assert not np.any(info[r, : 2 * K + 1, 2 * K + 1 :])


# ------------------------------------------------------------------ the fixture


def build_fixture() -> int:
    """Draw the datasets, fit them with lavaan (tools/r/cfa_fiml_check.R), write the CSVs."""
    data = [(name(d, s), *draw(d, s)) for d, s, _ in DATASETS]
    kmax = max(v.shape[1] for _, v, _ in data)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wide.csv"
        with open(path, "w") as fh:
            fh.write("dataset,K,group," + ",".join(f"x{j + 1}" for j in range(kmax)) + "\n")
            for key, v, m in data:
                for g in range(v.shape[0]):
                    cells = [repr(float(v[g, j])) if m[g, j] else "NA" for j in range(v.shape[1])]
                    cells += ["NA"] * (kmax - v.shape[1])
                    fh.write(f"{key},{v.shape[1]},{g}," + ",".join(cells) + "\n")
        script = ROOT / "tools" / "r" / "cfa_fiml_check.R"
        return subprocess.call(["Rscript", str(script), str(path), str(FITS), str(SCORES)])


if __name__ == "__main__":
    sys.exit(build_fixture())

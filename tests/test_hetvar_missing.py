"""blup_hetvar with absent members (member ids): the batch path against the reference.

A group then holds any set of member positions, so the batch kernel fits these
replications on their positional layouts (:mod:`micromacro_sim.models.hetvar_masked`):

* verdicts (converged, boundary, not applicable) equal the reference's on every
  replication, estimates within 1e-8 relative, on MCAR and MAR designs (n = 5 and 10,
  G = 30 and 100, low ICC with boundary fits);
* positions observed in one or two groups, whose variance runs to 0 (an unbounded
  likelihood once tau2 is at 0, a boundary optimum otherwise), end with the reference's
  verdict;
* a replication's numbers do not depend on its batch companions (bitwise);
* a batch with member ids takes the fast engine, and the method's results there equal the
  reference engine's.

The time per replication of both paths is printed, not asserted.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.models.hetvar import hetvar_ml
from micromacro_sim.models.hetvar_batch import HetVarBatch, hetvar_ml_batch
from micromacro_sim.models.hetvar_masked import _COLUMN_OPS_FROM, _groupsum, _rowsum
from tests.fastcheck import assert_same, make_batch

MAR = {"on": "z", "rate": 0.2, "strength": 1.0}
#: (scenario, replications): 48 replications in all, a fifth of them on the boundary.
DESIGNS = {
    "mcar_g30_n5_icc05": (dict(n_groups=30, group_size=5, icc=0.05, r_zxi=0.3,
                               missing_mcar=0.2), 14),
    "mcar_g100_n10": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3,
                           missing_mcar=0.2), 8),
    "mar_g30_n10_icc05": (dict(n_groups=30, group_size=10, icc=0.05, r_zxi=0.3,
                               missing_mar=MAR), 14),
    "mar_g100_n5_icc05": (dict(n_groups=100, group_size=5, icc=0.05, r_zxi=0.3,
                               missing_mar=MAR), 12),
}
#: Poisson group sizes with 20% MCAR: member ids observed in one or two groups only, and
#: widths (numbers of positions) that differ between replications.
RARE = dict(n_groups=30, group_size={"poisson": 8, "min": 2}, icc=0.05, r_zxi=0.3,
            missing_mcar=0.2)
FIELDS = ("mu", "tau2", "s2", "modes", "loglik", "iterations", "grad_max", "converged",
          "boundary")


def _batches() -> dict[str, Batch]:
    return {name: make_batch(params, reps, root=2) for name, (params, reps)
            in DESIGNS.items()}


def _compare(fit: HetVarBatch, batch: Batch) -> tuple[int, int, float]:
    """Assert the batch kernel equals the reference on every replication; returns the
    numbers of boundary and converged fits and the largest relative difference."""
    n_boundary = n_converged = 0
    worst = 0.0
    for r, data in enumerate(batch.datasets):
        ref = hetvar_ml(data)
        assert (fit.converged[r], fit.boundary[r]) == (ref.converged, ref.boundary), r
        K = ref.s2.size
        assert np.all(np.isnan(fit.s2[r, K:]))
        got = np.concatenate([[fit.mu[r], fit.tau2[r], fit.loglik[r]], fit.s2[r, :K],
                              fit.modes[r]])
        want = np.concatenate([[ref.mu, ref.tau2, ref.loglik], ref.s2, ref.modes])
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-300)
        scale = np.where(want != 0, np.abs(want), 1.0)
        worst = max(worst, float(np.max(np.abs(got - want) / scale)))
        n_boundary += ref.boundary
        n_converged += ref.converged
    return n_boundary, n_converged, worst


def test_batch_equals_the_reference_with_absent_members():
    boundary = total = 0
    for name, batch in _batches().items():
        assert batch.member_ids and not batch.reference_only, name
        b, _, worst = _compare(hetvar_ml_batch(batch), batch)
        assert worst <= 1e-8, name
        boundary += b
        total += batch.n_reps
    assert total >= 40
    assert boundary >= 6  # low ICC: the boundary verdict is exercised


def test_rarely_observed_positions_end_with_the_reference_verdict():
    # Positions observed in one group run to variance 0 (unbounded likelihood once tau2 is
    # 0: the fit stops when the information is no longer finite, or at max_iter); positions
    # observed in two groups may too, with tau2 > 0 (a boundary optimum the scoring only
    # approaches). Either way the batch ends where the reference does. Where such a fit
    # stops, and its tau2 and modes, are set by rounding (the reference's likelihood
    # cancels terms growing like 1 / s2_j; reordering the groups changes them), so the
    # estimates agree here only because the batch repeats the reference's arithmetic.
    batch = make_batch(RARE, 24, root=9)
    fit = hetvar_ml_batch(batch)
    _, converged, _ = _compare(fit, batch)
    counts = [np.bincount(d.position).min() for d in batch.datasets]
    assert min(counts) == 1
    degenerate = fit.boundary & (np.nanmin(fit.s2, axis=1) < 1e-12)
    assert degenerate.sum() >= 3
    assert (degenerate & (fit.tau2 == 0)).any() and (degenerate & (fit.tau2 > 0)).any()
    assert converged < batch.n_reps  # some stop unconverged, as the reference does


def test_the_once_observed_member_of_the_reference_test():
    # The dataset of test_mixed's boundary test: tau2 reaches 0, a member id observed once
    # runs to variance 0; flagged boundary and not converged, on both paths.
    from micromacro_sim.design.scenario import Scenario
    from micromacro_sim.generate.dgp import generate
    from micromacro_sim.generate.seeding import replication_rng

    sc = Scenario.from_params(RARE)
    data = generate(sc, replication_rng(9, sc, 100, 0))
    fit = hetvar_ml_batch(Batch.from_datasets([data]))
    assert fit.boundary[0] and not fit.converged[0] and fit.tau2[0] == 0.0
    _compare(fit, Batch.from_datasets([data]))


def _fit_in_stacks(datasets: list, order: np.ndarray, size: int) -> dict:
    """Every field of every replication, fitted in batches of ``size`` taken in ``order``."""
    out: dict = {}
    for at in range(0, order.size, size):
        part = order[at : at + size]
        fit = hetvar_ml_batch(Batch.from_datasets([datasets[i] for i in part]))
        for j, i in enumerate(part):
            K = datasets[i].n_positions
            out[i] = [fit.s2[j, :K] if key == "s2" else getattr(fit, key)[j] for key in FIELDS]
    return out


def test_bitwise_independent_of_batch_companions():
    batch = make_batch(RARE, 14, root=5)
    datasets = list(batch.datasets) + list(_batches()["mcar_g30_n5_icc05"].datasets[:6])
    assert len({d.n_positions for d in datasets}) >= 3  # companions of other widths
    n = len(datasets)
    order = np.arange(n)
    alone = _fit_in_stacks(datasets, order, 1)
    shuffled = np.random.default_rng(4).permutation(n)
    for size, how in ((n, order), (7, order), (3, shuffled), (n, order[::-1])):
        other = _fit_in_stacks(datasets, how, size)
        for i in range(n):
            for key, a, b in zip(FIELDS, alone[i], other[i], strict=True):
                assert np.array_equal(a, b, equal_nan=True), (i, key, size)


def test_mixed_batch_keeps_the_prefix_path_bits():
    # Replications without member ids in a batch with member ids keep the prefix kernel
    # (bitwise what a batch without member ids gives); those with ids are as alone.
    plain = make_batch(dict(n_groups=30, group_size={"uniform": [2, 8]}, icc=0.1,
                            r_zxi=0.3), 4, root=3)
    missing = make_batch(DESIGNS["mcar_g30_n5_icc05"][0], 4, root=3)
    mixed = Batch.from_datasets([*plain.datasets, *missing.datasets])
    assert mixed.member_ids and not plain.member_ids
    fit = hetvar_ml_batch(mixed)
    own = {0: hetvar_ml_batch(plain), 4: hetvar_ml_batch(missing)}
    for r in range(8):
        ref, j = own[4 * (r // 4)], r % 4
        for key in FIELDS:
            a, b = getattr(fit, key)[r], getattr(ref, key)[j]
            if key == "s2":
                K = mixed.datasets[r].n_positions
                a, b = a[:K], b[:K]
            assert np.array_equal(a, b, equal_nan=True), (r, key)


def test_method_takes_the_fast_engine_with_absent_members():
    est = get_estimator("blup_hetvar")
    batch = make_batch(DESIGNS["mar_g30_n10_icc05"][0], 10, root=2)
    assert batch.member_ids and est.batch_path(batch, "auto")
    fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
    assert fast.engine == "fast" and not np.any(fast.fallback)
    assert_same(fast, ref)


def test_not_applicable_matches_the_reference():
    # Three groups of pairs with half the members absent: some replications have no group
    # with two members left (not applicable), the others tiny fits on the boundary.
    est = get_estimator("blup_hetvar")
    batch = make_batch(dict(n_groups=3, group_size=2, icc=0.2, r_zxi=0.3,
                            missing_mcar=0.5), 12, root=1)
    fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
    assert_same(fast, ref)
    reasons = " ".join(ref.reason)
    assert "needs at least 3 groups" in reasons and "boundary" in reasons


@pytest.mark.parametrize("n", [1, 2, 5, 7, 8, 9, 10, 15, 16, 17, 24, 31, 64, 127, 128, 129])
def test_rowsum_is_numpy_sum(n):
    rng = np.random.default_rng(n)
    for rows in (3, _COLUMN_OPS_FROM):  # numpy itself, and column operations
        a = rng.standard_normal((2, rows, n)) * 10.0 ** rng.integers(-8, 8, (2, rows, n))
        a[0, 0] = -0.0  # the sign of an all-zero sum
        assert np.array_equal(_rowsum(a), a.sum(axis=-1))
        assert not np.signbit(_rowsum(a)[0, 0])


@pytest.mark.parametrize("K", [1, 2, 3, 5, 8, 10, 14, 17, 30])
def test_groupsum_is_numpy_sum(K):
    rng = np.random.default_rng(K)
    for k, G in ((1, 3), (2, 30), (7, 100), (33, 17)):
        a = rng.standard_normal((k, G, K)) * 10.0 ** rng.integers(-8, 8, (k, G, K))
        assert np.array_equal(_groupsum(a), a.sum(axis=1))
        assert np.array_equal(_groupsum(a)[0], a[0].sum(axis=0))  # the reference's sum


def test_time_per_replication(capsys):
    """Printed only: the time per replication of the batch kernel and the reference."""
    lines = []
    for name, params in (("mcar_g100_n10", DESIGNS["mcar_g100_n10"][0]),
                         ("mar_g30_n10_icc05", DESIGNS["mar_g30_n10_icc05"][0])):
        batch = make_batch(params, 40, root=11)
        batch.positional  # noqa: B018 - built once per batch, not per fit
        t = time.process_time()
        hetvar_ml_batch(batch)
        fast = (time.process_time() - t) / batch.n_reps
        t = time.process_time()
        for data in batch.datasets:
            hetvar_ml(data)
        ref = (time.process_time() - t) / batch.n_reps
        lines.append(f"hetvar {name}: batch {fast * 1e3:.2f} ms, reference {ref * 1e3:.2f} ms "
                     f"per replication ({ref / fast:.1f}x)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))

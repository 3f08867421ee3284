"""The contract every estimator honours, as checks a test suite or a user can run.

The package's tests run these checks over the whole registry; ``micromacro check-method
module:Name`` runs them on a user's estimator (:func:`run_contract`) and prints a
pass/fail table. Each check takes the estimator class (and, for the batch checks, a
design of :data:`DESIGNS`) and raises :class:`ContractFailure` (an ``AssertionError``)
saying what is wrong.

Checks
------
constructor
    The class declares a known ``default_se`` (one of
    :data:`~micromacro_sim.core.results.SE_TYPES`); the constructor only stores options:
    defaults as declared, unknown options refused with ``ValueError("unknown option
    ...")``, ``label`` taken.
fits_row16
    On the seed study's row 16 dataset the fit is proper (ok), well formed, repeatable,
    with finite SEs of its ``default_se`` type.
unbalanced
    On unbalanced groups the fit is ok, or not_applicable when ``needs_balanced``.
never_raises
    Edge datasets (tiny ICC, three groups, one member per group) never raise; every
    flagged fit carries a reason code; NaN estimates are never admissible.
jackknife (two-step methods)
    With ``se: jackknife`` the ``JK`` SEs equal a brute-force loop that refits the whole
    method without each group (to :data:`JK_TOL`), on the reference path and, per
    replication, on the batch path; a batch's ``JK`` bits do not depend on its companions.

In a run, what a method's code raises becomes an ``error`` result (``method_raised`` when it
is not a numerical error); here any such result fails the check that produced it, naming the
exception.
fast_equals_reference (per declared batch design)
    The batch path agrees with the reference path: identical verdicts and reasons,
    estimates within :data:`EST_TOL` and SEs within :data:`SE_TOL`.
bits_stable (per declared batch design)
    A replication's bits do not depend on the other replications of its batch.

The two batch checks build the method with its ``contract_options`` (a sampler's shorter
chains, say): the same code paths at a test's cost.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from micromacro_sim.core.results import OLS_SE_TYPES, SE_TYPES, BatchResult, FitResult
from micromacro_sim.core.status import Reason
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng

__all__ = ["CHECKS", "DESIGNS", "EST_TOL", "JK_TOL", "SE_TOL", "CheckResult", "ContractFailure",
           "assert_same", "batch_cases", "check_bits_stable", "check_default_se",
           "check_fast_equals_reference", "make_batch", "make_data", "run_contract"]

#: Fast and reference paths solve the same equations to about 1e-12; the contract is
#: estimates within 1e-6 and SEs within 1e-5 (absolute), identical verdicts.
EST_TOL, SE_TOL = 1e-6, 1e-5

#: Row 16 of Croon and van Veldhoven's (2007) Table 1.
ROW16 = {"n_groups": 100, "group_size": 10, "icc": 0.1, "r_zxi": 0.3}

#: Designs every batch path is checked on (one x; the Batch holds one x).
DESIGNS: dict[str, dict[str, Any]] = {
    "balanced": {"n_groups": 25, "group_size": 5, "icc": 0.2, "r_zxi": 0.3},
    "balanced_lowicc": {"n_groups": 20, "group_size": 4, "icc": 0.03, "r_zxi": 0.3},
    "unbalanced": {"n_groups": 25, "group_size": {"uniform": [2, 9]}, "icc": 0.2,
                   "r_zxi": 0.3},
    "balanced_z2": {"n_groups": 25, "group_size": 6, "icc": 0.15, "n_z": 2,
                    "r_zxi": [0.3, 0.1], "r_zz": 0.2},
    "unbalanced_z2": {"n_groups": 25, "group_size": [3, 8], "icc": 0.15, "n_z": 2,
                      "r_zxi": [0.3, 0.1], "r_zz": 0.2},
}

#: Edge designs on which a fit must not raise.
EDGE_DESIGNS = (
    {"n_groups": 5, "group_size": 2, "icc": 0.02, "r_zxi": 0.3},
    {"n_groups": 3, "group_size": 3, "icc": 0.5, "r_zxi": 0.9},
    {"n_groups": 30, "group_size": 1, "icc": 0.3, "r_zxi": 0.3},
)


class ContractFailure(AssertionError):
    """An estimator breaks the contract (the message says how)."""


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise ContractFailure(message)


def make_data(seed: int = 1, **params: Any) -> Dataset:
    """One simulated dataset (defaults: row 16)."""
    sc = Scenario.from_params({**ROW16, **params})
    return generate(sc, replication_rng(seed, sc, 0))


def make_batch(params: dict[str, Any], reps: int = 40, root: int = 7) -> Batch:
    """``reps`` replications of a scenario, as the runner would draw them (no gate)."""
    sc = Scenario.from_params(params)
    return Batch.from_datasets([generate(sc, replication_rng(root, sc, r)) for r in range(reps)])


def assert_same(fast: BatchResult, ref: BatchResult) -> None:
    """Replication by replication: identical flags, reasons and df; estimates and SEs within
    tolerance, with NaN in the same places."""
    _require(fast.engine == "fast" and ref.engine == "reference",
             f"engines are {fast.engine!r} and {ref.engine!r}, expected fast and reference")
    _require(fast.terms == ref.terms and fast.two_step == ref.two_step, "terms differ")
    _require(list(fast.reason) == list(ref.reason), "reasons differ between fast and reference")
    np.testing.assert_array_equal(fast.converged, ref.converged)
    np.testing.assert_array_equal(fast.admissible, ref.admissible)
    np.testing.assert_array_equal(fast.df_resid, ref.df_resid)  # NaN == NaN here
    np.testing.assert_allclose(fast.params, ref.params, rtol=0, atol=EST_TOL)
    for t in SE_TYPES:
        np.testing.assert_allclose(fast.bse[t], ref.bse[t], rtol=0, atol=SE_TOL, err_msg=t)


def _require_no_raise(reasons: Any) -> None:
    """No result records that the method's code raised (a bug, whatever the data)."""
    raised = [str(text) for code, text in reasons if code == Reason.METHOD_RAISED.value]
    _require(not raised, f"the method's code raised: {raised[0] if raised else ''}")


def check_result(res: Any, data: Dataset, label: str) -> None:
    """A fit result is well formed; a proper fit is finite, a flagged one says why."""
    _require(isinstance(res, FitResult), f"fit returned {type(res).__name__}, not FitResult")
    _require_no_raise([(f.code.value, f.text) for f in res.flags])
    _require(res.method == label, f"result method {res.method!r}, expected label {label!r}")
    _require(res.terms == data.terms, f"terms {res.terms}, expected {data.terms}")
    _require(res.params.shape == (len(data.terms),), f"params shape {res.params.shape}")
    _require(set(res.bse) <= set(SE_TYPES), f"unknown SE types {set(res.bse) - set(SE_TYPES)}")
    _require(not res.params.flags.writeable, "params are writeable")
    try:
        res.method = "other"
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise ContractFailure("FitResult is not frozen")
    if np.isnan(res.params).any():
        _require(not res.admissible, "a NaN estimate is admissible")
    if res.ok:
        bad = ~np.isfinite(res.params)
        _require(not bad.any(), "an ok fit has non-finite estimates (term "
                 f"{_terms(res.terms, bad)})")
        se = res.se("classical")
        bad = ~(np.isfinite(se) & (se > 0))
        _require(not bad.any(), f"an ok fit has SEs <= 0 or NaN (term {_terms(res.terms, bad)}: "
                 f"{se[bad][0] if bad.any() else ''})")
        _require(res.reason == "" or res.admissible, "a proper fit carries a failure reason")
        if res.two_step:
            _require(set(OLS_SE_TYPES) <= set(res.bse) and res.df_resid is not None,
                     "a two-step fit lacks an SE type or df_resid")
        lo, hi = res.conf_int().T
        bad = ~((lo < res.params) & (res.params < hi))
        _require(not bad.any(), f"bad confidence interval (term {_terms(res.terms, bad)}: "
                 f"[{lo[bad][0] if bad.any() else ''}, {hi[bad][0] if bad.any() else ''}], "
                 f"df_resid = {res.df_resid})")
    else:
        _require(res.reason and res.reason_code, "a flagged fit must carry a reason code")


def check_default_se(cls: type[Estimator]) -> None:
    """``default_se`` names an SE type (the one behind a bare ``cover``, ``reject``)."""
    declared = getattr(cls, "default_se", None)
    _require(isinstance(declared, str) and declared in SE_TYPES,
             f"default_se is {declared!r}, expected one of {', '.join(SE_TYPES)} (a one-step "
             "method keeps 'classical', the slot of its model SE)")


def check_constructor(cls: type[Estimator]) -> None:
    """A known ``default_se``; the constructor only validates and stores options."""
    _require(cls.name or cls.__name__, "no name")
    check_default_se(cls)
    est = cls()
    _require(est.params == {k: o.default for k, o in cls.options.items()},
             f"params {est.params} are not the declared defaults")
    try:
        cls(no_such_option=1)
    except ValueError as exc:
        _require("unknown option" in str(exc), f"unknown option refused as {exc}")
    else:
        raise ContractFailure("an unknown option is accepted")
    _require(cls(label="mine").label == "mine", "label is not taken")


def check_fits_row16(cls: type[Estimator]) -> None:
    """A proper, repeatable fit on row 16."""
    data = make_data(seed=3)
    est = cls(label="contract-label")
    res = est.fit(data)
    check_result(res, data, "contract-label")
    _require(res.ok, f"not ok on row 16: {res.reason}")
    if cls.default_se in SE_TYPES:  # a bad one fails the constructor check
        se = res.se(cls.default_se)
        _require(np.all(np.isfinite(se) & (se > 0)),
                 f"default_se is {cls.default_se!r}, but an ok fit has no such SEs")
    again = est.fit(data)
    _require(np.array_equal(res.params, again.params, equal_nan=True), "refit differs")


def check_unbalanced(cls: type[Estimator]) -> None:
    """Unbalanced groups: ok, or not_applicable when the method needs balanced groups.

    Sizes 3 to 8 in 100 groups: every member position of the wide layout is observed in
    several groups, so that the wide-format models (full-information ML) are estimable.
    """
    data = make_data(seed=4, n_groups=100, group_size={"uniform": [3, 8]}, icc=0.2)
    res = cls().fit(data)
    check_result(res, data, cls().label)
    if cls.needs_balanced:
        _require(res.status.value == "not_applicable",
                 f"needs_balanced but status {res.status.value}")
    else:
        _require(res.ok, f"not ok on unbalanced groups: {res.reason}")


def _terms(terms: tuple[str, ...], bad: np.ndarray) -> str:
    """The names of the terms where ``bad`` holds, comma-separated."""
    return ", ".join(t for t, b in zip(terms, bad, strict=True) if b)


def check_never_raises(cls: type[Estimator]) -> None:
    """Edge datasets: no exception, well-formed results, reasons on flagged fits. A failure
    names the edge design and the seed of its dataset."""
    for params in EDGE_DESIGNS:
        for seed in range(5):
            data = make_data(seed=seed, **params)
            try:
                check_result(cls().fit(data), data, cls().label)
            except ContractFailure as exc:
                design = ", ".join(f"{k}={v}" for k, v in params.items())
                raise ContractFailure(f"edge design {design} (seed {seed}): {exc}") from None


#: Agreement of the jackknife SE with its brute-force loop of refits.
JK_TOL = 1e-10


def _brute_jackknife(deleted: list[FitResult]) -> np.ndarray:
    """The jackknife SE from refits without each group, by its textbook formula."""
    d = np.stack([r.params for r in deleted])
    G = len(d)
    return np.sqrt((G - 1) / G * ((d - d.mean(axis=0)) ** 2).sum(axis=0))


def check_jackknife(cls: type[Estimator]) -> None:
    """``se: jackknife`` equals the brute-force loop of refits (two-step methods only)."""
    if not cls.two_step or "se" not in cls.options:
        return
    est, plain = cls(se="jackknife"), cls()
    for seed, size in ((5, 6), (6, {"uniform": [3, 8]})):
        data = make_data(seed=seed, n_groups=15, group_size=size, icc=0.3)
        res = est.fit(data)
        check_result(res, data, est.label)
        brute = _brute_jackknife([plain.fit(data.without_group(g))
                                  for g in range(data.n_groups)])
        np.testing.assert_allclose(res.se("JK"), brute, rtol=0, atol=JK_TOL,
                                   err_msg=f"reference JK, group sizes {size}")
    balanced = cls.has_batch(True)
    if not balanced:
        return
    batch = make_batch(dict(DESIGNS["balanced"], n_groups=15), reps=3, root=13)
    whole = est.fit_batch(batch, "fast")
    for r, data in enumerate(batch.datasets):
        alone = est.fit_batch(Batch.from_datasets([data]), "fast")
        _require(np.array_equal(alone.bse["JK"][0], whole.bse["JK"][r], equal_nan=True),
                 f"JK SEs of replication {r} change with its batch companions")
        deleted = [plain.fit_batch(Batch.from_datasets([data.without_group(g)]), "fast")
                   .result(0) for g in range(data.n_groups)]
        np.testing.assert_allclose(whole.bse["JK"][r], _brute_jackknife(deleted), rtol=0,
                                   atol=JK_TOL, err_msg=f"batch JK, replication {r}")


#: The per-class checks, by name.
CHECKS: dict[str, Callable[[type[Estimator]], None]] = {
    "constructor": check_constructor,
    "fits_row16": check_fits_row16,
    "unbalanced": check_unbalanced,
    "never_raises": check_never_raises,
    "jackknife": check_jackknife,
}

_BATCHES: dict[str, Batch] = {}


def _batch(design: str) -> Batch:
    if design not in _BATCHES:
        _BATCHES[design] = make_batch(DESIGNS[design], reps=14, root=11)
    return _BATCHES[design]


def batch_cases(cls: type[Estimator]) -> list[str]:
    """The designs of :data:`DESIGNS` on which ``cls`` declares a batch path."""
    return [d for d, p in DESIGNS.items()
            if cls.has_batch(not isinstance(p["group_size"], (dict, list)))]


def check_fast_equals_reference(cls: type[Estimator], design: str) -> None:
    """The batch path agrees with the reference path on ``design``."""
    batch = _batch(design)
    est = cls(**dict(cls.contract_options))
    fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
    for res in (fast, ref):
        _require_no_raise(zip(res.reason_code, res.reason, strict=True))
    assert_same(fast, ref)
    _require(list(fast.status) == list(ref.status), "statuses differ")
    _require(list(fast.reason_code) == list(ref.reason_code), "reason codes differ")


def check_bits_stable(cls: type[Estimator], design: str) -> None:
    """Fitting replications in batches of 1 and 5 gives the bits of the whole batch."""
    batch = _batch(design)
    est = cls(**dict(cls.contract_options))
    whole = est.fit_batch(batch, "fast")
    R = batch.n_reps
    for size in (1, 5):
        for start in range(0, R, size):
            idx = np.arange(start, min(start + size, R))
            part = est.fit_batch(Batch.from_datasets([batch.datasets[i] for i in idx]), "fast")
            _require(np.array_equal(part.params, whole.params[idx], equal_nan=True),
                     f"estimates of replications {idx.tolist()} change with batch size {size}")
            for t in SE_TYPES:
                _require(np.array_equal(part.bse[t], whole.bse[t][idx], equal_nan=True),
                         f"{t} SEs of replications {idx.tolist()} change with batch size {size}")
            _require(list(part.reason_code) == list(whole.reason_code[idx]),
                     f"reason codes change with batch size {size}")


@dataclass(frozen=True)
class CheckResult:
    """One line of the contract table."""

    check: str
    passed: bool
    detail: str = ""


def _run_one(name: str, fn: Callable[[], None]) -> CheckResult:
    try:
        fn()
    except AssertionError as exc:
        first = (str(exc).strip().splitlines() or ["failed"])[0]
        return CheckResult(name, False, first)
    except Exception as exc:  # noqa: BLE001 - a user's estimator may raise anything
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult(name, False, f"raised {type(exc).__name__}: {exc} "
                           f"({where.filename}:{where.lineno})")
    return CheckResult(name, True)


def run_contract(cls: type[Estimator]) -> list[CheckResult]:
    """Every check on ``cls``: the per-class ones, then both batch checks per design it
    declares a batch path for."""
    out = [_run_one(name, lambda f=fn: f(cls)) for name, fn in CHECKS.items()]
    for design in batch_cases(cls):
        out.append(_run_one(f"fast_equals_reference[{design}]",
                            lambda d=design: check_fast_equals_reference(cls, d)))
        out.append(_run_one(f"bits_stable[{design}]",
                            lambda d=design: check_bits_stable(cls, d)))
    return out

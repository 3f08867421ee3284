"""The closed vocabulary of fit outcomes: a status and the reason codes behind it.

Every fit ends in one :class:`Status` (``ok``, ``flagged``, ``not_applicable`` or
``error``) derived from its :class:`Flag` s: a reason of :data:`NOT_APPLICABLE_REASONS`
makes it ``not_applicable``, one of :data:`ERROR_REASONS` ``error``. A flag is a
:class:`Reason` code from the closed set below with the human text beside it; code never
parses that text. The estimates table stores ``status``, ``reason_code`` (the first flag's
code) and ``reason`` (every flag's text, joined by "; "); summaries count flags by
``reason_code``.

Adding a reason is one line in :class:`Reason` and one in :data:`REASON_TEXT`; the
documentation table in ``docs/status.md`` is checked against them by the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = [
    "ERROR_REASONS",
    "NOT_APPLICABLE_REASONS",
    "REASON_TEXT",
    "Flag",
    "Reason",
    "Status",
    "add_flags",
    "derive_status",
    "flag",
    "flags_text",
    "no_flags",
    "primary_code",
]


class Status(str, Enum):
    """Outcome of one fit."""

    OK = "ok"
    """Converged, admissible, finite estimates."""
    FLAGGED = "flagged"
    """Estimates may exist but the fit is inadmissible or not converged."""
    NOT_APPLICABLE = "not_applicable"
    """The method cannot be used on this design or dataset."""
    ERROR = "error"
    """The method's code raised (numerical code, or any other exception); no estimates."""


class Reason(str, Enum):
    """Why a fit is not ``ok`` (closed set)."""

    NOT_CONVERGED = "not_converged"
    NEGATIVE_VARIANCE = "negative_variance"
    BOUNDARY = "boundary"
    NOT_POSITIVE_DEFINITE = "not_positive_definite"
    SAMPLE_COV_NOT_PD = "sample_cov_not_positive_definite"
    S_XIXI_NONPOSITIVE = "S_xixi_nonpositive"
    R_NONPOSITIVE = "R_nonpositive"
    MARKER_NOT_IDENTIFIED = "marker_not_identified"
    LOWER_INADMISSIBLE_OPTIMUM = "lower_inadmissible_optimum"
    CLOSED_FORM_DISAGREEMENT = "closed_form_disagreement"
    NON_FINITE = "non_finite"
    TOO_FEW_GROUPS = "too_few_groups"
    RANK_DEFICIENT = "rank_deficient"
    LEVERAGE_ONE = "leverage_one"
    PERFECT_FIT = "perfect_fit"
    NEEDS_BALANCED = "needs_balanced"
    NEEDS_TRUTH = "needs_truth"
    TOO_MANY_X = "too_many_x"
    TOO_FEW_MEMBERS = "too_few_members"
    NUMERICAL_ERROR = "numerical_error"
    MEMBER_ORDER_UNDEFINED = "member_order_undefined"
    MEMBERS_MISALIGNED = "members_misaligned"
    METHOD_RAISED = "method_raised"
    SPARSE_POSITION = "sparse_position"
    MCMC_NOT_CONVERGED = "mcmc_not_converged"
    JACKKNIFE_INCOMPLETE = "jackknife_incomplete"


#: Default human text of each reason (a flag may carry a more specific text).
REASON_TEXT: dict[Reason, str] = {
    Reason.NOT_CONVERGED: "not converged",
    Reason.NEGATIVE_VARIANCE: "negative variance",
    Reason.BOUNDARY: "zero variance (boundary)",
    Reason.NOT_POSITIVE_DEFINITE: "not positive definite",
    Reason.SAMPLE_COV_NOT_PD: "sample covariance not positive definite",
    Reason.S_XIXI_NONPOSITIVE: "S_xixi <= 0",
    Reason.R_NONPOSITIVE: "R <= 0",
    Reason.MARKER_NOT_IDENTIFIED: "marker loading not identified (near-zero standardized "
                                  "loading or singular information)",
    Reason.LOWER_INADMISSIBLE_OPTIMUM: "a lower optimum is inadmissible",
    Reason.CLOSED_FORM_DISAGREEMENT: "disagrees with closed form",
    Reason.NON_FINITE: "non-finite estimates or scores",
    Reason.TOO_FEW_GROUPS: "too few groups",
    Reason.RANK_DEFICIENT: "rank-deficient design (constant or collinear scores)",
    Reason.LEVERAGE_ONE: "non-finite standard errors (a leverage of 1)",
    Reason.PERFECT_FIT: "the second step fits y exactly (residual variance at most 1e-12 of "
                        "Var(y)): slopes and SEs are rounding noise",
    Reason.NEEDS_BALANCED: "needs balanced groups",
    Reason.NEEDS_TRUTH: "needs the true xi (simulation only)",
    Reason.TOO_MANY_X: "supports fewer x variables",
    Reason.TOO_FEW_MEMBERS: "too few members or groups for the model",
    Reason.NUMERICAL_ERROR: "numerical error",
    Reason.MEMBER_ORDER_UNDEFINED: "depends on which member is which, and the data name no "
                                   "member (give a member column, or accept row order)",
    Reason.MEMBERS_MISALIGNED: "member labels differ across groups (the method needs the same "
                               "members in every group)",
    Reason.SPARSE_POSITION: "a member position is observed in fewer than 2 groups (or "
                            "without variance): its parameters are not identified (lavaan "
                            "refuses such data)",
    Reason.MCMC_NOT_CONVERGED: "the Markov chains did not converge: split R-hat above 1.01 or "
                               "bulk effective sample size below 400 on a reported parameter",
    Reason.JACKKNIFE_INCOMPLETE: "the jackknife SE asked for (se: jackknife) is missing: a "
                                 "delete-one-group refit gave no estimates",
    Reason.METHOD_RAISED: "the method's code raised an exception that is not a numerical "
                          "error, or called sys.exit (a bug in the method)",
}

#: Reasons that make a fit ``not_applicable`` rather than ``flagged``.
NOT_APPLICABLE_REASONS: frozenset[Reason] = frozenset(
    {Reason.NEEDS_BALANCED, Reason.NEEDS_TRUTH, Reason.TOO_MANY_X, Reason.TOO_FEW_MEMBERS,
     Reason.MEMBER_ORDER_UNDEFINED, Reason.MEMBERS_MISALIGNED, Reason.SPARSE_POSITION}
)

#: Reasons that make a fit ``error``: the method's code raised, so there are no estimates.
ERROR_REASONS: frozenset[Reason] = frozenset({Reason.NUMERICAL_ERROR, Reason.METHOD_RAISED})


@dataclass(frozen=True)
class Flag:
    """One reason code with its human text."""

    code: Reason
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, Reason):
            raise TypeError(f"Flag.code must be a Reason, got {self.code!r}")


def flag(code: Reason, detail: str = "") -> Flag:
    """A flag with the default text of ``code``, or ``detail`` when given."""
    return Flag(code, detail or REASON_TEXT[code])


def flags_text(flags: tuple[Flag, ...]) -> str:
    """The human reason: every flag's text, joined by "; "."""
    return "; ".join(f.text for f in flags)


def primary_code(flags: tuple[Flag, ...]) -> str:
    """The ``reason_code`` column: the first flag's code ("" when there is none)."""
    return flags[0].code.value if flags else ""


def derive_status(converged: bool, admissible: bool, finite: bool,
                  flags: tuple[Flag, ...]) -> Status:
    """The status implied by a fit's verdicts and flags."""
    codes = {f.code for f in flags}
    if codes & NOT_APPLICABLE_REASONS:
        return Status.NOT_APPLICABLE
    if codes & ERROR_REASONS:
        return Status.ERROR
    if converged and admissible and finite and not flags:
        return Status.OK
    return Status.FLAGGED


def no_flags(n: int) -> np.ndarray:
    """An object array of ``n`` empty flag tuples (the batch form of "no problem")."""
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = ()
    return out


def add_flags(flags: np.ndarray, mask: np.ndarray, new: Flag | tuple[Flag, ...]) -> None:
    """Append ``new`` to the flags of every replication in ``mask`` (in place)."""
    extra = (new,) if isinstance(new, Flag) else tuple(new)
    for r in np.flatnonzero(mask):
        flags[r] = tuple(flags[r]) + extra

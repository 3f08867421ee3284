"""Fit micro-macro models to one dataset (a user's table or a simulated draw).

:func:`fit` takes a long DataFrame (one row per member) and the methods as a config's
``methods:`` list names them (a name, ``{label: {method: ..., option: value}}``, or a
list of those), and returns one :class:`~micromacro_sim.api.fitresult.MicroMacroResult`
whatever the number of methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.api.fitresult import (
    LOW_RELIABILITY,
    MethodResult,
    MicroMacroResult,
    Reliability,
    Summary,
    UnknownMethod,
    results_table,
)
from micromacro_sim.api.userdata import prepare
from micromacro_sim.core.errors import ConfigError, DataError, NotApplicable
from micromacro_sim.core.status import Status
from micromacro_sim.estimators import SE_TYPES, FitResult, available, build, registry
from micromacro_sim.generate.dataset import Dataset

__all__ = [
    "LOW_RELIABILITY",
    "MethodResult",
    "MethodsArg",
    "MicroMacroResult",
    "Reliability",
    "Summary",
    "UnknownMethod",
    "default_methods",
    "fit",
    "fit_dataset",
    "method_specs",
    "reliability",
    "results_table",
]

#: What ``method=`` accepts: a name, a mapping ``{label: {method: ..., **options}}``
#: (several labels allowed), or a list of names and one-label mappings.
MethodsArg = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]


def default_methods() -> list[str]:
    """Every registered method that works on real data (all but the simulation oracle)."""
    return [m for m in available() if not registry()[m].needs_truth]


def method_specs(method: MethodsArg | None):
    """Parse ``method`` exactly as a config's ``methods:`` list.

    Parameters
    ----------
    method : str, mapping, list or None
        None means :func:`default_methods`.

    Returns
    -------
    tuple of :class:`~micromacro_sim.design.config.MethodSpec`

    Raises
    ------
    DataError
        Unknown method, unknown or ill-typed option, duplicate label (the config
        layer's message, with the field called ``method``).
    """
    from micromacro_sim.run.configure import parse_methods

    if method is None:
        items: list[Any] = default_methods()
    elif isinstance(method, str):
        items = [method]
    elif isinstance(method, Mapping):
        items = [{k: v} for k, v in method.items()]
    elif isinstance(method, Sequence):
        items = list(method)
    else:
        raise DataError(f"method: expected a name, a mapping or a list, got {method!r}")
    try:
        return parse_methods(items)
    except ConfigError as exc:
        msg = str(exc)
        raise DataError("method" + msg[len("methods"):] if msg.startswith("methods")
                        else msg) from None


def fit_dataset(data: Dataset, methods: MethodsArg | None = None) -> list[FitResult]:
    """Fit each method to ``data`` (``methods`` as in :func:`method_specs`)."""
    return [build(spec).fit(data) for spec in method_specs(methods)]


def reliability(data: Dataset) -> Reliability:
    """ICC(1), ICC(2) and (balanced groups, members identified) coefficient alpha."""
    from micromacro_sim.models.reliability import anova, coefficient_alpha

    a = anova(data)
    rows = []
    for j, name in enumerate(data.x_names):
        alpha_raw = alpha_std = np.nan
        if data.balanced and data.sizes[0] >= 2:
            try:
                alpha_raw, alpha_std = coefficient_alpha(data.wide(j))
            except NotApplicable:  # alpha treats members as items: needs member identity
                pass
        rows.append({"variable": name, "icc1": a.icc1[j], "icc2": a.icc2[j], "alpha_raw": alpha_raw,
                     "alpha_std": alpha_std, "mean_group_size": float(data.sizes.mean())})
    return Reliability(pd.DataFrame(rows).set_index("variable"))


def _method_result(res: FitResult, d: Dataset, cov_type: str, rel: Reliability,
                   notes: Sequence[str]) -> MethodResult:
    notes = list(notes)
    ct = cov_type if (cov_type in res.bse or res.two_step) else "classical"
    if ct != cov_type and res.status is not Status.NOT_APPLICABLE:
        notes.append(f"{res.method} reports model-based (classical) SEs only")
    scores = design = None
    if "scores" in res.extras:
        vals = np.asarray(res.extras["scores"], dtype=float)
        design = d.design(vals)
        vals = vals[:, 0] if vals.ndim == 2 and vals.shape[1] == 1 else vals
        if vals.ndim == 1:
            scores = pd.Series(vals, index=d.group_labels, name=f"{res.method} score")
    return MethodResult(fit=res, cov_type=ct, n_groups=d.n_groups, n_persons=d.n_persons,
                        scores=scores, reliability=rel, notes=tuple(notes), design=design,
                        y=np.asarray(d.y) if design is not None else None)


def _member_note(mode: str, member: str | None) -> str:
    if mode == "column":
        return f"members identified by {member!r} (results do not depend on the row order)"
    if mode == "row_order":
        return ("row order accepted as member order: methods that treat members as indicators "
                "depend on the order of the rows")
    return ""


def _type_name(value: object) -> str:
    """``list``, ``numpy.ndarray``, ``pandas.DataFrame``: a type named for a message."""
    module, name = type(value).__module__.split(".")[0], type(value).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


def _brief(value: object) -> str:
    """A value for a one-line message: its repr when short, else its type."""
    text = repr(value)
    return f"a {_type_name(value)}" if "\n" in text or len(text) > 60 else text


def _check_arguments(data: object, columns: Mapping[str, object], row_order_is_member: object,
                     cov_type: object) -> None:
    """Refuse an argument of the wrong type with a one-line DataError naming it.

    ``columns`` maps group, x, y, z and member to their values: column names (str); x
    and z may be lists of names, z and member None.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError("data: expected a pandas DataFrame with one row per member, got a "
                        f"{_type_name(data)}")
    for field, value in columns.items():
        several = field in ("x", "z")
        if isinstance(value, str) or (value is None and field in ("z", "member")):
            continue
        if several and isinstance(value, (list, tuple)) and all(isinstance(v, str)
                                                                 for v in value):
            continue
        what = "a column name or a list of column names" if several else "a column name"
        raise DataError(f"{field}: expected {what} (str), got {_brief(value)}")
    if not isinstance(row_order_is_member, (bool, np.bool_)):
        raise DataError("row_order_is_member: expected true or false, got "
                        f"{_brief(row_order_is_member)}")
    if not isinstance(cov_type, str) or cov_type not in SE_TYPES:
        raise DataError(f"cov_type: expected one of {', '.join(SE_TYPES)}, got "
                        f"{_brief(cov_type)}")


def fit(
    data: pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    y: str,
    z: str | Sequence[str] | None = None,
    method: MethodsArg | None = "unadjusted",
    cov_type: str = "HC3",
    member: str | None = None,
    row_order_is_member: bool = False,
) -> MicroMacroResult:
    """Fit micro-macro model(s) to a long DataFrame (one row per member).

    Parameters
    ----------
    data : DataFrame
    group, y : str
        Group identifier and group-level outcome (constant within group).
    x : str or list of str
        Member-level variable(s), each aggregated to its own latent group mean.
    z : str or list of str, optional
        Group-level covariates (constant within group).
    method : str, mapping or list
        As a config's ``methods:`` list: ``"croon"``, ``["unadjusted", "croon"]``,
        ``{"lav": {"method": "sem_2level", "lavaan_fixed_x": True}}`` or a list mixing
        names and one-label mappings; None fits every method for real data.
    cov_type : {"classical", "HC0", "HC1", "HC2", "HC3"}
        SE type of two-step methods (one-step models report their model-based SE).
    member : str, optional
        Member identifier column (unique within a group, the same label the same member
        in every group). Needed by the methods that treat members as indicators
        (factor_score, sem, sam, zcond_score, blup_hetvar); with it, no result depends
        on the order of the rows.
    row_order_is_member : bool
        Without ``member``: accept the order of the rows inside each group as the member
        order. Otherwise those methods are ``not_applicable`` (reason
        ``member_order_undefined``).

    Returns
    -------
    MicroMacroResult
        Indexed by method label; methods that cannot fit these data are kept with status
        ``not_applicable`` and their reason.

    Raises
    ------
    DataError
        An argument of the wrong type (``data`` not a DataFrame, a column name not a
        string), bad data or method options, or no requested method applies to the data.
    """
    _check_arguments(data, {"group": group, "x": x, "y": y, "z": z, "member": member},
                     row_order_is_member, cov_type)
    specs = method_specs(method)
    prep = prepare(data, group=group, x=x, y=y, z=z, member=member,
                   row_order_is_member=row_order_is_member)
    d = prep.data
    note = _member_note(d.member_mode, member)
    notes = (*prep.notes, *((note,) if note else ()))
    rel = reliability(d)
    out = tuple(_method_result(build(spec).fit(d), d, cov_type, rel, notes) for spec in specs)
    if all(r.status is Status.NOT_APPLICABLE for r in out):
        why = "; ".join(f"{r.method}: {r.reason} [{r.reason_code}]" for r in out)
        raise DataError(f"method: no requested method applies to these data ({why})")
    return MicroMacroResult(results=out, reliability=rel, notes=notes)

"""When the member-position layout supports a model with one parameter set per position.

The free-loading CFA (a loading, an intercept and a residual variance per position) and
lavaan's saturated moments behind ``sam`` need every position observed in at least two
groups with some variance; lavaan refuses other data ("some variables have only 1
observation or no finite variance"). The parallel model (one residual variance for all
positions) needs only one group with two members.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.status import Reason

__all__ = ["layout_problem"]


def layout_problem(values: np.ndarray, mask: np.ndarray, min_positions: int = 3
                   ) -> tuple[Reason, str] | None:
    """Why a position-wise model does not apply to this layout, or None.

    Parameters
    ----------
    values : ndarray (G, K)
        Members' x by position (anything where ``mask`` is False).
    mask : ndarray of bool (G, K)
    min_positions : int
        Positions the model needs (3 for a one-factor CFA).

    Returns
    -------
    (Reason, str) or None
        ``TOO_FEW_MEMBERS`` with fewer than ``min_positions`` positions;
        ``SPARSE_POSITION`` naming the first position observed in fewer than 2 groups or
        without variance.
    """
    mask = np.asarray(mask, dtype=bool)
    K = mask.shape[1]
    if K < min_positions:
        return (Reason.TOO_FEW_MEMBERS,
                f"needs at least {min_positions} member positions, the data have {K}")
    for k in range(K):
        seen = np.asarray(values, dtype=float)[mask[:, k], k]
        if len(seen) < 2 or not np.ptp(seen) > 0:
            return (Reason.SPARSE_POSITION,
                    f"member position {k + 1} is observed in {len(seen)} group(s)"
                    + ("" if len(seen) < 2 else " without variance"))
    return None

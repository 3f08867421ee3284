"""One-factor CFA on the wide G x n matrix (members as indicators): per dataset and batched.

The model is lavaan's default identification for ``cfa('lv =~ x1 + ... + xn')``: the first
loading is fixed at 1; the other loadings, all residual variances and the factor variance
are free; ML on the sample covariance (denominator G), so the intercepts are the sample
means. The fit is unbounded like lavaan's (a Heywood case shows up as a negative variance
instead of being silently clamped at zero). :func:`fit_cfa_batch` fits R datasets at
once; the per-dataset :func:`fit_cfa` is the same code on a batch of one, so the fast
engine, the reference engine and the redraw gates give the same verdicts. The solver is
the profiled ML fit of :mod:`micromacro_sim.models.cfa_profile` (Joreskog 1967; since 0.3.0,
before it the Newton fit of :mod:`micromacro_sim.models.cfa_fit`, kept as the comparison
path of ``tools/compare_cfa_profile.py``).

:class:`CFAMemo` remembers the fits of one chunk's datasets (the redraw gate fits every
draw; factor_score then asks for the kept ones); it is created and dropped with the chunk.

Reference: R ``lavaan::cfa(..., meanstructure=TRUE)`` and ``lavPredict()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Flag, flags_text, no_flags
from micromacro_sim.models import cfa_solver as solver
from micromacro_sim.models.cfa_profile import fit_arrays_profiled

__all__ = ["CFABatch", "CFAFit", "CFAMemo", "cfa_verdicts", "fit_cfa", "fit_cfa_batch"]

@dataclass(frozen=True)
class CFAFit:
    """ML fit of the one-factor model x = nu + lambda * f + e on a G x n matrix.

    Attributes
    ----------
    loadings : ndarray (n,)
        lambda, with lambda[0] = 1.
    residual_variances : ndarray (n,)
        Diagonal of Theta.
    factor_variance : float
        phi = Var(f).
    intercepts : ndarray (n,)
        nu, the sample means.
    fmin : float
        lavaan's ``fmin``: half the ML discrepancy at the solution.
    converged : bool
        The optimizer met the gradient criterion.
    admissible : bool
        Positive factor and residual variances and a positive-definite implied
        covariance matrix (lavaan's post-check).
    flags : tuple of Flag
        Why the fit is flagged (empty when converged and admissible).
    n_iter : int
        Fisher-scoring iterations used.
    lavaan_flags : tuple of Flag
        The verdict of the positive start's solution, the basin lavaan's optimizer
        reaches (the ``lavaan_cfa`` gate); empty when that solution is proper.
    """

    loadings: np.ndarray
    residual_variances: np.ndarray
    factor_variance: float
    intercepts: np.ndarray
    fmin: float
    converged: bool
    admissible: bool
    flags: tuple[Flag, ...]
    n_iter: int
    lavaan_flags: tuple[Flag, ...] = ()

    @property
    def reason(self) -> str:
        """Human text of the flags."""
        return flags_text(self.flags)

    @property
    def ok(self) -> bool:
        """Converged and admissible."""
        return self.converged and self.admissible

    @property
    def implied_cov(self) -> np.ndarray:
        """Model-implied covariance phi lambda lambda' + Theta."""
        lam = self.loadings
        return self.factor_variance * np.outer(lam, lam) + np.diag(self.residual_variances)

    def scores(self, wide: np.ndarray, *, method: str = "regression") -> np.ndarray:
        """Factor scores of every row of ``wide``, as ``lavaan::lavPredict``.

        Parameters
        ----------
        wide : ndarray (G, n)
        method : {"regression", "bartlett"}
            Regression: phi lambda' Sigma^-1 (x - nu). Bartlett:
            (lambda' Theta^-1 lambda)^-1 lambda' Theta^-1 (x - nu).
        """
        dev = np.asarray(wide, dtype=float) - self.intercepts
        lam = self.loadings
        if method == "regression":
            w = self.factor_variance * np.linalg.solve(self.implied_cov, lam)
        elif method == "bartlett":
            t = lam / self.residual_variances
            w = t / (t @ lam)
        else:
            raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
        return dev @ w


@dataclass(frozen=True, eq=False)
class CFABatch:
    """ML fits of the one-factor model on R wide matrices at once (arrays over R).

    Attributes
    ----------
    loadings : ndarray (R, n)
        lambda, first column 1.
    residual_variances : ndarray (R, n)
    factor_variance : ndarray (R,)
    intercepts : ndarray (R, n)
    fmin : ndarray (R,)
        Half the ML discrepancy at the solution (lavaan's ``fmin``).
    converged, admissible : ndarray of bool (R,)
    flags : ndarray of object (R,)
        A tuple of flags per replication.
    n_iter : ndarray of int (R,)
        Newton iterations of the start that produced the solution.
    lavaan_flags : ndarray of object (R,)
        Per replication, the positive start's verdict (see :class:`CFAFit`).
    """

    loadings: np.ndarray
    residual_variances: np.ndarray
    factor_variance: np.ndarray
    intercepts: np.ndarray
    fmin: np.ndarray
    converged: np.ndarray
    admissible: np.ndarray
    flags: np.ndarray
    n_iter: np.ndarray
    lavaan_flags: np.ndarray

    def fit(self, r: int) -> CFAFit:
        """Replication ``r`` as a :class:`CFAFit`."""
        return CFAFit(
            loadings=self.loadings[r].copy(),
            residual_variances=self.residual_variances[r].copy(),
            factor_variance=float(self.factor_variance[r]),
            intercepts=self.intercepts[r].copy(),
            fmin=float(self.fmin[r]),
            converged=bool(self.converged[r]),
            admissible=bool(self.admissible[r]),
            flags=tuple(self.flags[r]),
            n_iter=int(self.n_iter[r]),
            lavaan_flags=tuple(self.lavaan_flags[r]),
        )

    def scores(self, wide: np.ndarray, *, method: str = "regression") -> np.ndarray:
        """Factor scores of every replication, shape (R, G) (NaN without a solution)."""
        dev = np.asarray(wide, dtype=float) - self.intercepts[:, None, :]
        lam, psi, phi = self.loadings, self.residual_variances, self.factor_variance
        ok = np.isfinite(phi) & np.all(np.isfinite(lam), axis=1) & np.all(np.isfinite(psi), axis=1)
        lam = np.where(ok[:, None], lam, 1.0)
        psi = np.where(ok[:, None], psi, 1.0)
        phi = np.where(ok, phi, 1.0)
        if method == "regression":
            sig = solver.sigma(np.concatenate([lam, psi, phi[:, None]], axis=1))
            w = phi[:, None] * solver.solve(sig, lam)
            for r in np.flatnonzero(ok & np.isnan(w[:, 0])):  # not PD: as the reference
                try:
                    w[r] = phi[r] * np.linalg.solve(sig[r], lam[r])
                except np.linalg.LinAlgError:
                    pass
        elif method == "bartlett":
            t = lam / psi
            w = t / np.sum(t * lam, axis=1, keepdims=True)
        else:
            raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
        out = np.einsum("rgj,rj->rg", dev, w)
        out[~ok] = np.nan
        return out




_FIELDS = ("loadings", "residual_variances", "factor_variance", "intercepts", "fmin",
           "converged", "admissible", "flags", "n_iter", "lavaan_flags")
_OBJECT_FIELDS = ("flags", "lavaan_flags")


def _digest(x: np.ndarray) -> bytes:
    return hashlib.blake2b(x.tobytes() + repr(x.shape).encode(), digest_size=16).digest()


class CFAMemo:
    """The CFA fits of one chunk's datasets, keyed by a digest of each wide matrix.

    Created by the code that simulates a chunk and dropped with it (no process-wide
    state): the redraw gate fits every draw through it and factor_score asks it for the
    kept datasets. A fit depends on its own data only, so a remembered row equals a fresh
    fit, bit for bit.
    """

    def __init__(self) -> None:
        self._rows: dict[bytes, tuple] = {}
        self._fiml_rows: dict[bytes, tuple] = {}

    def __len__(self) -> int:
        return len(self._rows) + len(self._fiml_rows)

    def fit_fiml(self, x: np.ndarray, mask: np.ndarray,
                 fitter: Callable[[np.ndarray, np.ndarray], CFABatch]) -> CFABatch:
        """``fitter(x, mask)`` (the full-information ML fit of
        :mod:`~micromacro_sim.models.cfa_fiml`, passed in by the caller) of the datasets
        not seen yet; the others from the memo. ``x``, ``mask``: (R, G, K) at one width."""
        X = np.ascontiguousarray(np.where(mask, x, 0.0), dtype=float)
        M = np.ascontiguousarray(mask, dtype=bool)
        keys = [_digest(X[r]) + _digest(M[r].view(np.uint8)) for r in range(len(X))]
        missing = [r for r, k in enumerate(keys) if k not in self._fiml_rows]
        if missing:
            fresh = fitter(X[missing], M[missing])
            for i, r in enumerate(missing):
                self._fiml_rows[keys[r]] = tuple(getattr(fresh, f)[i] for f in _FIELDS)
            if len(missing) == len(X):
                return fresh
        return _stack([self._fiml_rows[k] for k in keys])

    def fit_batch(self, wide: np.ndarray) -> CFABatch:
        """:func:`fit_cfa_batch` of ``wide`` (R, G, n), fitting only the unseen datasets."""
        X = np.ascontiguousarray(wide, dtype=float)
        if X.ndim != 3:
            raise ValueError(f"wide: expected an (R, G, n) array, got shape {X.shape}")
        keys = [_digest(X[r]) for r in range(len(X))]
        missing = [r for r, k in enumerate(keys) if k not in self._rows]
        if missing:
            fresh = _fit_fresh(X[missing])
            for i, r in enumerate(missing):
                self._rows[keys[r]] = tuple(getattr(fresh, f)[i] for f in _FIELDS)
            if len(missing) == len(X):
                return fresh
        return _stack([self._rows[k] for k in keys])


def _stack(rows: list[tuple]) -> CFABatch:
    """A :class:`CFABatch` of remembered rows."""
    cols = {f: np.array([row[i] for row in rows]) for i, f in enumerate(_FIELDS)
            if f not in _OBJECT_FIELDS}
    for f in _OBJECT_FIELDS:
        cols[f] = no_flags(len(rows))
        for r, row in enumerate(rows):
            cols[f][r] = row[_FIELDS.index(f)]
    return CFABatch(**cols)


def fit_cfa_batch(wide: np.ndarray, memo: CFAMemo | None = None) -> CFABatch:
    """One-factor CFA of R datasets at once (see :func:`_fit_fresh` for the algorithm).

    Parameters
    ----------
    wide : ndarray (R, G, n)
        Rows are groups, columns member positions (the indicators), n >= 3.
    memo : CFAMemo, optional
        The chunk's memo: fits of datasets it has seen are reused, new ones remembered.

    Returns
    -------
    CFABatch
    """
    if memo is not None:
        return memo.fit_batch(wide)
    return _fit_fresh(wide)


def _fit_fresh(wide: np.ndarray) -> CFABatch:
    """One-factor CFA by ML with lavaan's default identification, for R datasets at once.

    Unbounded ML (as lavaan: a Heywood case shows up as a negative variance) on the sample
    covariance with denominator G, profiled over the residual variances; every start's
    lowest discrepancy kept, the marker checked (:mod:`micromacro_sim.models.cfa_profile`,
    verdicts of :mod:`micromacro_sim.models.cfa_fit`). The fit of one replication does not
    depend on the others, so :func:`fit_cfa` (this function on one dataset) gives the same
    verdicts.
    """
    X = np.asarray(wide, dtype=float)
    if X.ndim != 3:
        raise ValueError(f"wide: expected an (R, G, n) array, got shape {X.shape}")
    if X.shape[2] < 3:
        raise ValueError(f"a one-factor CFA needs at least 3 indicators, got {X.shape[2]}")
    return CFABatch(**fit_arrays_profiled(X))


def fit_cfa(wide: np.ndarray, memo: CFAMemo | None = None) -> CFAFit:
    """One-factor CFA by ML with lavaan's default identification, one dataset.

    :func:`fit_cfa_batch` on a batch of one (same algorithm, same verdicts). Never raises
    for numerical trouble: the result is flagged instead.

    Parameters
    ----------
    wide : ndarray (G, n)
        Rows are groups, columns member positions (the indicators), n >= 3.
    memo : CFAMemo, optional
        The chunk's memo (see :func:`fit_cfa_batch`).

    Returns
    -------
    CFAFit
    """
    X = np.asarray(wide, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"wide: expected a (G, n) array, got shape {X.shape}")
    return fit_cfa_batch(X[None], memo).fit(0)




def cfa_verdicts(fits: CFABatch, gate: str = "cfa") -> np.ndarray:
    """A CFA redraw gate's verdict per replication: "" when the fit passes.

    ``gate="cfa"``: the kept (lowest-discrepancy) solution is converged and admissible,
    its marker identified. ``gate="lavaan_cfa"``: lavaan's verdict on Clark's call
    (``converged`` and ``post.check``), the positive start's solution with the same
    checks. Otherwise ``"<gate>: <reason>"`` (the text of the flags).
    """
    out = np.full(len(fits.flags), "", dtype=object)
    if gate == "lavaan_cfa":
        for r, fl in enumerate(fits.lavaan_flags):
            if fl:
                out[r] = f"lavaan_cfa: {flags_text(fl)}"
        return out.astype(str)
    for r, (c, a, fl) in enumerate(zip(fits.converged, fits.admissible, fits.flags,
                                       strict=True)):
        if not c:
            out[r] = f"cfa: {flags_text(fl) or 'not converged'}"
        elif not a:
            out[r] = f"cfa: {flags_text(fl) or 'inadmissible'}"
    return out.astype(str)

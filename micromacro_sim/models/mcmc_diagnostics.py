"""MCMC convergence diagnostics, vectorized over leading axes (input ``(..., chains, draws)``).

Rank-normalized split R-hat and bulk effective sample size of Vehtari, Gelman, Simpson,
Carpenter & Bürkner (2021, Bayesian Analysis 16(2), 667-718), and the Monte Carlo standard
errors of the posterior mean and SD, computed as rstan 2.21 computes them (its
``Rhat``, ``ess_bulk``, ``ess_tail`` and ``monitor``; ``tests/test_mcmc_diagnostics.py``
compares every function with rstan on committed draws to 1e-8):

* chains are split in halves (the middle draw of an odd length is dropped);
* rank normalization ``z = Phi^{-1}((r - c) / (S - 2c + 1))`` with average ranks of ties;
  ``c = 3/8`` (Blom) as in the article and the R package ``posterior``; rstan 2.21 uses
  ``c = 1/2`` (``(r - 1/2) / S``), available as ``rank_offset=RSTAN_RANK_OFFSET``;
* R-hat is the larger of the bulk (ranks of the draws) and tail (ranks of the draws folded
  around their median) rank-normalized split R-hats;
* ESS uses Geyer's initial positive and monotone sequences on autocovariances from the
  FFT, exactly as rstan's ``ess_rfun`` (including its scaling of the autocovariances by
  ``M / N`` with ``M`` the next 2-3-5-smooth length >= N, which matters only when the
  split chains' length is not 2-3-5-smooth);
* ``mcse_mean = sd / sqrt(ess_mean)`` (``ess_mean``: ESS of the split draws, not
  rank-normalized); ``mcse_sd = sd * sqrt(e (1 - 1/E)^(E - 1) - 1)`` with
  ``E = min(ess_mean(x), ess_mean(x^2))``.

Constant or non-finite series give NaN (rstan: NA, except that its rank-based ``Rhat`` and
``ess_bulk`` stay finite when some draws are infinite).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RANK_OFFSET",
    "RSTAN_RANK_OFFSET",
    "ess_basic",
    "ess_bulk",
    "ess_mean",
    "ess_tail",
    "mcse_mean",
    "mcse_sd",
    "posterior_summary",
    "rhat",
    "rhat_basic",
    "split_chains",
    "z_scale",
]

#: Offset c of the rank normalization in the article and the R package posterior (Blom).
RANK_OFFSET = 3 / 8
#: The offset rstan 2.21's ``z_scale`` uses.
RSTAN_RANK_OFFSET = 1 / 2


def _invalid(x: np.ndarray) -> np.ndarray:
    """Series (over the last two axes) that are constant or not all finite."""
    finite = np.isfinite(x).all(axis=(-2, -1))
    with np.errstate(invalid="ignore"):
        span = np.abs(x.max(axis=(-2, -1)) - x.min(axis=(-2, -1)))
    return ~finite | ~(span >= np.finfo(float).eps)


def split_chains(x: np.ndarray) -> np.ndarray:
    """Split each chain in halves: (..., C, N) -> (..., 2C, N // 2)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    if n == 1:
        return x
    h = n // 2
    return np.concatenate([x[..., :h], x[..., n - h:]], axis=-2)


def z_scale(x: np.ndarray, rank_offset: float = RANK_OFFSET) -> np.ndarray:
    """Rank-normalize all draws of each series jointly (over its last two axes)."""
    x = np.asarray(x, dtype=float)
    flat = x.reshape(*x.shape[:-2], -1)
    S = flat.shape[-1]
    # scipy is imported here, not at module load: the registry imports this module, and
    # scipy.stats would cost every command's start-up about half a second
    from scipy.special import ndtri
    from scipy.stats import rankdata

    r = rankdata(flat, method="average", axis=-1)
    return ndtri((r - rank_offset) / (S - 2 * rank_offset + 1)).reshape(x.shape)


def rhat_basic(x: np.ndarray) -> np.ndarray:
    """Classic R-hat of chains (..., C, N) (no splitting, no ranks)."""
    x = np.asarray(x, dtype=float)
    C, n = x.shape[-2:]
    if C < 2 or n < 2:
        return np.full(x.shape[:-2], np.nan)
    var_between = n * x.mean(axis=-1).var(axis=-1, ddof=1)
    var_within = x.var(axis=-1, ddof=1).mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt((var_between / var_within + n - 1) / n)
    return np.where(_invalid(x), np.nan, out)


def rhat(x: np.ndarray, rank_offset: float = RANK_OFFSET) -> np.ndarray:
    """Rank-normalized split R-hat: max of the bulk and the folded (tail) R-hat."""
    x = np.asarray(x, dtype=float)
    bulk = rhat_basic(z_scale(split_chains(x), rank_offset))
    med = np.median(x.reshape(*x.shape[:-2], -1), axis=-1)[..., None, None]
    tail = rhat_basic(z_scale(split_chains(np.abs(x - med)), rank_offset))
    out = np.maximum(bulk, tail)
    return np.where(_invalid(x), np.nan, out)


def _next_good_size(n: int) -> int:
    """Smallest 2-3-5-smooth integer >= n (rstan's ``fft_next_good_size``; 2 for n <= 2)."""
    if n <= 2:
        return 2
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m <= 1:
            return n
        n += 1


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """rstan's ``autocovariance`` of every chain (..., C, N): ``M/N`` times the biased
    autocovariance ``sum_i yc_i yc_{i+t} / N``."""
    n = x.shape[-1]
    m = _next_good_size(n)
    yc = x - x.mean(axis=-1, keepdims=True)
    f = np.fft.rfft(yc, n=2 * m, axis=-1)
    ac = np.fft.irfft(f.real**2 + f.imag**2, n=2 * m, axis=-1)[..., :n]
    return ac * (m / (n * n))


def ess_basic(x: np.ndarray) -> np.ndarray:
    """Effective sample size of chains (..., C, N) (rstan's ``ess_rfun``)."""
    x = np.asarray(x, dtype=float)
    lead, (C, N) = x.shape[:-2], x.shape[-2:]
    if N < 3:
        return np.full(lead, np.nan)
    with np.errstate(all="ignore"):
        out = _ess_flat(x.reshape(-1, C, N)).reshape(lead)
    return np.where(_invalid(x), np.nan, out)


def _ess_flat(xs: np.ndarray) -> np.ndarray:
    """:func:`ess_basic` of series (S, C, N) with N >= 3."""
    S, C, N = xs.shape
    acov = _autocovariance(xs)
    mean_var = acov[:, :, 0].mean(axis=1) * N / (N - 1)
    var_plus = mean_var * (N - 1) / N
    if C > 1:
        var_plus = var_plus + xs.mean(axis=-1).var(axis=-1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
    rho[:, 0] = 1.0
    K = N // 2
    even, odd = rho[:, 0:2 * K:2], rho[:, 1:2 * K:2]
    pair = even + odd
    k = np.arange(K)
    stop = ~((2 * k < N - 5) & (pair > 0))
    kstar = np.argmax(stop, axis=1)
    idx = np.arange(S)
    # Geyer's initial positive sequence, the stopping pair kept when its sum is >= 0
    keep = k < kstar[:, None]
    last = (k == kstar[:, None]) & (kstar[:, None] > 0) & (pair >= 0)
    e = np.where(keep | last, even, 0.0)
    o = np.where(keep | last, odd, 0.0)
    ek = even[idx, kstar]
    e[idx, kstar] = np.where(ek > 0, ek, e[idx, kstar])
    # Geyer's initial monotone sequence over pairs 1 .. k* - 1
    cm = np.minimum.accumulate(np.where(keep, pair, np.inf), axis=1)
    prev = np.concatenate([np.full((S, 1), np.inf), cm[:, :-1]], axis=1)
    mono = (k >= 1) & keep & (pair > prev)
    e = np.where(mono, prev / 2, e)
    o = np.where(mono, prev / 2, o)
    total = np.where(keep, e + o, 0.0).sum(axis=1)
    tau = np.where(kstar == 0, 2.0, -1.0 + 2.0 * total + e[idx, kstar])
    tau = np.maximum(tau, 1.0 / np.log10(C * N))
    return C * N / tau


def ess_bulk(x: np.ndarray, rank_offset: float = RANK_OFFSET) -> np.ndarray:
    """Bulk ESS: ESS of the rank-normalized split chains."""
    x = np.asarray(x, dtype=float)
    out = ess_basic(z_scale(split_chains(x), rank_offset))
    return np.where(_invalid(x), np.nan, out)


def ess_mean(x: np.ndarray) -> np.ndarray:
    """ESS of the split chains (for the MCSE of the mean)."""
    return ess_basic(split_chains(x))


def ess_tail(x: np.ndarray) -> np.ndarray:
    """Tail ESS: the smaller ESS of the 5% and 95% quantile indicators."""
    x = np.asarray(x, dtype=float)
    flat = x.reshape(*x.shape[:-2], -1)
    out = []
    for p in (0.05, 0.95):
        qp = np.quantile(flat, p, axis=-1)[..., None, None]
        out.append(ess_mean((x <= qp).astype(float)))
    return np.minimum(*out)


def _sd(x: np.ndarray) -> np.ndarray:
    return x.reshape(*x.shape[:-2], -1).std(axis=-1, ddof=1)


def mcse_mean(x: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of the posterior mean."""
    x = np.asarray(x, dtype=float)
    return _sd(x) / np.sqrt(ess_mean(x))


def mcse_sd(x: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of the posterior SD (rstan 2.21's ``mcse_sd``)."""
    x = np.asarray(x, dtype=float)
    e = np.minimum(ess_mean(x), ess_mean(x * x))
    with np.errstate(invalid="ignore"):
        return _sd(x) * np.sqrt(np.e * (1 - 1 / e) ** (e - 1) - 1)


def posterior_summary(draws: np.ndarray, *, point: str = "median",
                      level: float = 0.95) -> dict[str, np.ndarray]:
    """Posterior summaries of draws (R, chains, draws, P), each an array (R, P).

    Parameters
    ----------
    draws : ndarray (R, C, D, P)
    point : {"median", "mean"}
        The point estimate.
    level : float
        Probability of the equal-tailed credible interval (quantiles as R's type 7).

    Returns
    -------
    dict
        ``estimate, sd, ci_low, ci_high, rhat`` (rank-normalized split), ``ess_bulk``,
        ``mcse_mean, mcse_sd``.
    """
    if point not in ("median", "mean"):
        raise ValueError("point must be 'median' or 'mean'")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    x = np.moveaxis(np.asarray(draws, dtype=float), -1, 1)  # (R, P, C, D)
    flat = x.reshape(*x.shape[:2], -1)
    est = np.median(flat, axis=-1) if point == "median" else flat.mean(axis=-1)
    lo, hi = np.quantile(flat, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    return {
        "estimate": est,
        "sd": flat.std(axis=-1, ddof=1),
        "ci_low": lo,
        "ci_high": hi,
        "rhat": rhat(x),
        "ess_bulk": ess_bulk(x),
        "mcse_mean": mcse_mean(x),
        "mcse_sd": mcse_sd(x),
    }

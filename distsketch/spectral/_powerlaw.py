"""Power-law fit of an empirical spectral density, as WeightWatcher 0.7.7 defines it.

WeightWatcher (``pl_package='ww'``) fits ``p(x) ~ x^-alpha`` for ``x >= xmin`` to the sorted
eigenvalues above ``1e-5``: for every candidate ``xmin = x_i`` (all but the largest) the
continuous maximum-likelihood exponent ``alpha_i = 1 + n_i / sum_{j>=i} ln(x_j / x_i)`` and the
Kolmogorov-Smirnov distance ``D_i = max_k |1 - (x_{i+k}/x_i)^(1-alpha_i) - k/n_i|`` are computed,
and the first minimum of ``D`` is kept. WeightWatcher loops over candidates in Python; here the
candidates are done in blocks of a two-dimensional array, those that a strided sweep proves to lie
above the minimum left out (:func:`_ks_distances`), and the reported ``alpha`` is
recomputed at the chosen candidate with the same expression WeightWatcher evaluates, so the
result agrees with it to rounding. Samples of fewer than 20 eigenvalues take WeightWatcher's
small-sample path: bias-corrected exponents ``1 + (n-1)/sum ln(x_j/x_i)`` for tails of at least 8,
and again the first minimum of ``D`` (WeightWatcher computes a ``D - 0.868/sqrt(n)`` objective
there but its caller overrides that choice with the minimum of ``D``), reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PowerLawFit", "fit_power_law", "fit_clipped_power_law", "EVALS_THRESH"]

EVALS_THRESH = 1e-5  # eigenvalues at or below this are left out of the fit
SMALL_N = 20
_BLOCK_ELEMS = 1 << 22
_KS_STRIDE = 16  # the pruning sweep of _ks_distances: every 16th eigenvalue


@dataclass(frozen=True)
class PowerLawFit:
    """The chosen candidate: exponent, tail start and end, KS distance, standard error."""

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    n_tail: int


def _ks_rows(x, alphas, idx, j):
    """``max_j |1 - (x_j/x_i)^(1-alpha_i) - (j-i)/n_i|`` over the columns ``j >= i`` of ``j``, for
    each candidate ``i`` in ``idx`` (one block)."""
    N = len(x)
    k = j[None, :] - idx[:, None]
    n = (N - idx).astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        theo = (x[j][None, :] / x[idx][:, None]) ** (1.0 - alphas[idx][:, None])
        dev = np.abs(1.0 - theo - k / n)
    dev[k < 0] = 0.0
    return dev.max(axis=1)


def _ks_blocks(x, alphas, cand, j):
    out = np.empty(len(cand))
    if len(cand) == 0:
        return out
    rows = max(1, _BLOCK_ELEMS // max(1, len(j)))
    for b0 in range(0, len(cand), rows):
        idx = cand[b0:b0 + rows]
        lo = int(np.searchsorted(j, idx[0]))  # columns below the block's first candidate are all masked
        out[b0:b0 + rows] = _ks_rows(x, alphas, idx, j[lo:])
    return out


def _ks_distances(x, alphas, cand, stride=_KS_STRIDE):
    """D_i for the candidate indices ``cand`` (sorted), vectorised over blocks of candidates.

    Only the first minimum of ``D`` is used, so the ``O(N^2)`` sweep is pruned. Candidates with
    tails of at most ``32 stride`` eigenvalues are computed in full (they are cheap). For the
    others a sweep over every ``stride``-th eigenvalue gives a lower bound of ``D`` (the same
    elementwise values, on a subset); the one with the smallest bound is computed in full, and
    then every one whose bound does not exceed the smallest full ``D`` so far (with a 1e-12
    relative margin for any last-bit difference between evaluations). The minimum and its first
    index are those of the full sweep; candidates left out hold their lower bound, which is above
    the minimum."""
    N = len(x)
    if len(cand) == 0:
        return np.ones(0)
    full = np.arange(N)
    if stride <= 1:
        return _ks_blocks(x, alphas, cand, full)
    Ds = np.empty(len(cand))
    short = (N - cand) <= 32 * stride
    Ds[short] = _ks_blocks(x, alphas, cand[short], full)
    longi = np.flatnonzero(~short)
    if len(longi) == 0:
        return Ds
    lb = _ks_blocks(x, alphas, cand[longi], np.arange(0, N, stride))
    if np.any(np.isnan(lb)) or np.any(np.isnan(Ds[short])):  # nothing to bound with: the full sweep
        Ds[longi] = _ks_blocks(x, alphas, cand[longi], full)
        return Ds
    b = int(np.argmin(lb))
    best = _ks_blocks(x, alphas, cand[longi[b:b + 1]], full)[0]
    if np.any(short):
        best = min(best, float(Ds[short].min()))
    if np.isnan(best):
        Ds[longi] = _ks_blocks(x, alphas, cand[longi], full)
        return Ds
    keep = lb <= best * (1 + 1e-12) + 1e-300
    Ds[longi] = lb
    Ds[longi[keep]] = _ks_blocks(x, alphas, cand[longi[keep]], full)
    return Ds


def _fit_standard(x):
    N = len(x)
    L = np.log(x, dtype=np.float64)
    suffix = np.cumsum(L[::-1])[::-1]
    n = (N - np.arange(N - 1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + n / (suffix[:-1] - n * L[:-1])
    Ds = np.ones(N - 1)
    cand = np.flatnonzero(alphas > 1)
    Ds[cand] = _ks_distances(x, alphas, cand)
    i = int(np.argmin(Ds))
    # the reported values, evaluated exactly as WeightWatcher does at the chosen candidate
    ni = float(N - i)
    alpha = 1.0 + ni / (np.sum(L[i:]) - ni * L[i])
    if alpha > 1:
        D = float(np.max(np.abs(1 - (x[i:] / x[i]) ** (-alpha + 1) - np.arange(ni) / ni)))
    else:
        D = 1.0
    sigma = (alpha - 1) / np.sqrt(N - i)
    return PowerLawFit(float(alpha), float(x[i]), float(x[-1]), D, float(sigma), N - i)


def _fit_small(x, k_min=8):
    """WeightWatcher's small-sample path. Its ``J`` objective picks a candidate that the
    caller then overrides with the first minimum of ``D``, so only the per-candidate arrays
    matter; they are reproduced here, including the fallback when no candidate qualifies."""
    N = len(x)
    L = np.log(x, dtype=np.float64)
    alphas = np.zeros(N - 1)
    Ds = np.ones(N - 1)
    any_valid = False
    for i in range(N - 1):
        n_int = N - i
        if n_int < k_min:
            continue
        n = float(n_int)
        s = np.sum(L[i:]) - n * L[i]
        if s <= 1e-12:
            continue
        a = 1.0 + (n - 1.0) / s
        alphas[i] = a
        if a <= 1.0:
            continue
        Ds[i] = float(np.max(np.abs(np.arange(n_int, dtype=np.float64) / n - (1.0 - (x[i:] / x[i]) ** (1.0 - a)))))
        any_valid = True
    sigmas = (alphas - 1.0) / np.sqrt(N - np.arange(N - 1))
    if not any_valid:
        n = float(N)
        s = np.sum(L) - n * L[0]
        if s > 1e-12:
            a = 1.0 + (n - 1.0) / s
            alphas[0] = a
            Ds[0] = float(np.max(np.abs(np.arange(N, dtype=np.float64) / n - (1.0 - (x / x[0]) ** (1.0 - a)))))
    i = int(np.argmin(Ds))
    return PowerLawFit(float(alphas[i]), float(x[i]), float(x[-1]), float(Ds[i]), float(sigmas[i]), N - i)


def fit_power_law(data, xmax=None) -> PowerLawFit:
    """Fit WeightWatcher's power law to positive samples ``data`` (any order).

    ``xmax``: if given, the sample is cut at the value nearest to it (as WeightWatcher does).
    Raises ``ValueError`` when fewer than two samples remain.
    """
    x = np.sort(np.asarray(data, dtype=np.float64))
    if xmax is not None:
        x = x[: int(np.argmin(np.abs(x - xmax))) + 1]
    if len(x) < 2:
        raise ValueError(f"a power-law fit needs at least 2 eigenvalues above {EVALS_THRESH}; got {len(x)}")
    return _fit_small(x) if len(x) < SMALL_N else _fit_standard(x)


def fit_clipped_power_law(evals, max_fingers=10, finger_thresh=1.0, min_alpha=2.0, evaluated=None):
    """WeightWatcher's ``fix_fingers='clip_xmax'``: drop the largest eigenvalues one at a time
    (from the 2nd up to ``max_fingers - 1``) until alpha falls by more than ``finger_thresh``.

    Returns ``(best_fit, num_fingers, first_fit)``; ``evals`` sorted ascending. ``evaluated``: a
    list that receives ``(dropped, fit)`` for every fit made (``dropped`` largest values left out).
    """
    first = fit_power_law(evals)
    if evaluated is not None:
        evaluated.append((0, first))
    for idx in range(2, max_fingers):
        fit = fit_power_law(evals[:-idx])
        if evaluated is not None:
            evaluated.append((idx, fit))
        if fit.alpha + finger_thresh < first.alpha:
            return fit, idx - 1, first
        if min_alpha is not None and fit.alpha <= min_alpha:
            break
    return first, 0, first

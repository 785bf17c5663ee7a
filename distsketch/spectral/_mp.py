"""Marchenko-Pastur bulk fit, as WeightWatcher 0.7.7's ``mp_fit`` computes it, made fast.

WeightWatcher rescales the eigenvalues to mean 1, then grid-searches sigma
(``scipy.optimize.brute`` over ``[0.05, 2) * s0`` in steps of ``0.01 * s0`` followed by a
Nelder-Mead polish) for the MP density closest, in squared error, to a linear-kernel density
estimate (bandwidth 0.1) of the eigenvalues on 1000 points. It re-fits the kernel density at
every one of the ~250 objective evaluations; the estimate does not depend on sigma, so here it
is computed once per fit and the objective only evaluates the MP density. The same optimiser
runs on the same objective values, so sigma_mp and the derived columns agree with
WeightWatcher to rounding.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

__all__ = ["mp_fit"]

_KDE_POINTS = 1000
_DENSITY_FLOOR = 0.01


def _linear_kde(samples, grid, bw):
    """Density of a linear-kernel estimate (sklearn ``KernelDensity(kernel='linear')``)."""
    samples = np.sort(samples)
    out = np.empty(len(grid))
    step = max(1, (1 << 22) // max(1, len(samples)))
    for g0 in range(0, len(grid), step):
        g = grid[g0:g0 + step]
        lo = np.searchsorted(samples, g[0] - bw, side="left")
        hi = np.searchsorted(samples, g[-1] + bw, side="right")
        s = samples[lo:hi]
        out[g0:g0 + step] = np.clip(1.0 - np.abs(g[:, None] - s[None, :]) / bw, 0.0, None).sum(axis=1)
    return out / (len(samples) * bw)


class _Residual:
    """WeightWatcher's ``resid_mp`` with the kernel density precomputed."""

    def __init__(self, to_fit, Q, bw):
        self.Q = Q
        xde = np.linspace(0, np.max(to_fit) + 0.5, _KDE_POINTS)
        yde = _linear_kde(to_fit, xde, bw)
        good = yde > _DENSITY_FLOOR
        self.n_bad = int(np.count_nonzero(yde < _DENSITY_FLOOR))
        self.xde, self.yde = xde[good], yde[good]
        self.x_peak = self.xde[np.where(self.yde == max(self.yde))][0] if len(self.yde) else np.nan
        self.x_top = max(self.xde) if len(self.xde) else np.nan

    def __call__(self, p, *args):
        sigma = p[0] if np.ndim(p) else p
        x = self.xde
        with np.errstate(all="ignore"):
            if self.Q == 1:
                ymp = np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - x ** 2))
                resid = ymp - self.yde
            else:
                y = 1 / self.Q
                b = np.power(sigma * (1 + np.sqrt(1 / self.Q)), 2)
                a = np.power(sigma * (1 - np.sqrt(1 / self.Q)), 2)
                if (b < self.x_peak) | (b > self.x_top) | (a > self.x_peak):
                    resid = np.zeros(len(self.yde)) + 1000
                else:
                    ymp = np.nan_to_num((1 / (2 * np.pi * sigma * sigma * x * y)) * np.sqrt((b - x) * (x - a)))
                    resid = ymp - self.yde
        resid = np.concatenate((resid, np.zeros(self.n_bad)))
        return np.sum(resid ** 2)


def mp_fit(evals, N, M, bw=0.1):
    """``(num_spikes, sigma_mp, mp_softrank, bulk_min, bulk_max, W_scale)`` of WeightWatcher's MP fit.

    ``evals``: the layer's eigenvalues; ``N >= M``: its matrix dimensions (``Q = N / M``).
    """
    evals = np.asarray(evals, dtype=np.float64)
    Q = N / M
    Wscale = np.sqrt(evals.shape[0]) / np.sqrt(np.sum(evals))
    to_plot = (Wscale * Wscale) * evals
    lambda_max = np.max(to_plot)
    s0 = np.sqrt(lambda_max / np.square(1 + 1.0 / np.sqrt(Q)))
    to_fit = np.sqrt(to_plot) if Q == 1 else to_plot
    ranges = (slice(0.05 * s0, 2.0 * s0, 0.01 * s0),)
    res = optimize.brute(_Residual(to_fit, Q, bw), ranges, full_output=True)
    s1 = res[0][0] if np.ndim(res[0]) else res[0]
    bulk_max = (s1 * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (s1 * (1 - 1 / np.sqrt(Q))) ** 2
    TW = 1 / np.sqrt(Q) * np.power(bulk_max, 2 / 3) * np.power(M, -2 / 3)
    bulk_max_TW = bulk_max + np.sqrt(TW)
    num_spikes = len(to_plot[to_plot > bulk_max_TW])
    mp_softrank = bulk_max / lambda_max
    return (num_spikes, float(s1), float(mp_softrank), float(bulk_min / (Wscale * Wscale)),
            float(bulk_max / (Wscale * Wscale)), float(Wscale))

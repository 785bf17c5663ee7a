"""A backend seen through an exact power-of-two scale: ``scale * A``, for data near overflow or underflow.

Entries of size ``1e200`` overflow ``A.T A`` and ``||A||_F^2``; entries of size ``1e-300``
underflow them. Multiplying each block by ``2^e`` as it is read is exact (no rounding,
outside the subnormal range), so an algorithm run on :class:`ScaledRowData` and
un-scaled at the end returns the answer for ``A`` itself. The scale comes from
:func:`max_exponent`, one pass that reduces a histogram of the blocks' largest binary
exponents (sums only, like every other pass, so it runs on any backend).
"""

from __future__ import annotations

import math

import numpy as np

from ._protocol import RowData

__all__ = ["ScaledRowData", "max_exponent", "pow2_scale"]

_EMIN, _EMAX = -1100, 1100  # frexp exponents of float64 (subnormals included)


def _k_scaled(Ai, r0, dist, kernel, scale, *small):
    return kernel(Ai * Ai.dtype.type(scale), r0, dist, *small)


def _hist(X):
    h = np.zeros(_EMAX - _EMIN)
    if X.size:
        top = float(np.max(np.abs(X)))
        if top > 0 and math.isfinite(top):
            h[math.frexp(top)[1] - _EMIN] = 1.0
    return h


def _k_exponent(Ai, r0, dist):
    return (), (_hist(Ai),)


def _k_exponent_dist(r0, dist):
    return (), (_hist(dist[0]),)


def max_exponent(data, x=None) -> int | None:
    """``e`` with ``max |A_ij|`` in ``[2^(e-1), 2^e)``: one pass (or, for a distributed ``x``, none).

    ``None`` when every entry is zero.
    """
    if x is None:
        _, (h,) = data.row_pass(_k_exponent)
    else:
        _, (h,) = data.dist_pass(_k_exponent_dist, dist=(x,))
    nz = np.flatnonzero(h)
    return int(nz[-1]) + _EMIN if len(nz) else None


def pow2_scale(e: int | None, dtype=np.float64) -> float:
    """``2^-e`` clipped to the normal range of ``dtype``: brings a maximum of size ``2^e`` into ``[0.5, 1)``."""
    if e is None:
        return 1.0
    fi = np.finfo(dtype)
    lo, hi = fi.minexp + 2, fi.maxexp - 2
    return math.ldexp(1.0, int(min(max(-e, lo), hi)))


class ScaledRowData(RowData):
    """``scale * A`` for a backend ``inner`` holding ``A``; passes are counted on ``inner``."""

    def __init__(self, inner: RowData, scale: float):  # no super().__init__: the counters are inner's
        self.inner = inner
        self.scale = float(scale)
        self.shape = inner.shape
        self.dtype = inner.dtype
        self.out_of_core = inner.out_of_core

    def busy_cores_here(self) -> int:
        return self.inner.busy_cores_here()

    @property
    def passes(self):
        return self.inner.passes

    @passes.setter
    def passes(self, value):
        self.inner.passes = value

    @property
    def _checked(self):
        return self.inner._checked

    @_checked.setter
    def _checked(self, value):
        self.inner._checked = value

    def row_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        return self.inner.row_pass(_k_scaled, dist=dist, small=(kernel, self.scale) + tuple(small),
                                   dist_out=dist_out)

    def dist_pass(self, kernel, *, dist=(), small=(), dist_out=()):
        return self.inner.dist_pass(kernel, dist=dist, small=small, dist_out=dist_out)

    def distribute(self, x, *, check=True):
        return self.inner.distribute(x, check=check)

    def gather(self, x):
        return self.inner.gather(x)

    def combine(self, fn, *xs, ncols=None, dtype=None):
        return self.inner.combine(fn, *xs, ncols=ncols, dtype=dtype)

    def norm(self, x):
        return self.inner.norm(x)

    def output(self, x, *, dtype=None):
        return self.inner.output(x, dtype=dtype)

    def peek(self, rows, cols):
        return self.inner.peek(rows, cols) * self.scale

    def restore_state(self, *, passes=None, checked=None):
        self.inner.restore_state(passes=passes, checked=checked)

    def persist(self, x):
        return self.inner.persist(x)

    @property
    def lazy(self):
        return self.inner.lazy

    @property
    def cached(self):
        return self.inner.cached

    @property
    def fingerprint(self):
        return self.inner.fingerprint

    def __getattr__(self, name):  # backend extras (source, comm, progress) are inner's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

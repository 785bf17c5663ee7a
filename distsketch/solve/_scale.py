"""Exact power-of-two scaling of least-squares data near overflow or underflow.

``lstsq(A * 1e-300, b)`` has a well-defined answer (``x * 1e300``), but ``||r||^2``,
``||A||^2 ||x||`` and the Gram matrix under- or overflow in float64. The problem is
solved for ``A' = sA A`` and ``b' = sb b`` with ``sA``, ``sb`` powers of two (exact), then

    x = (sA / sb) x',   y = y' / sb,   ||r|| = ||r'|| / sb,   ||A.T r|| = ||A'.T r'|| / (sA sb),
    damp' = sA damp,    c' = sA sb c,  x0' = (sb / sA) x0.

``sb`` comes from ``||b||`` (or, when that over/underflows, the largest binary exponent in
``b``: no read of ``A``); ``sA`` from ``||S A||_F`` after the sketch (no extra pass), or,
when the sketch itself overflowed, from one pass that finds the largest exponent of ``A``
followed by a new sketch (two extra passes, for entries near 1e300 only).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..backends import pow2_scale

__all__ = ["scale_rhs", "scale_sketch", "SAFE"]

#: norms in this range have squares and products far from over- and underflow: left unscaled
SAFE = (1e-100, 1e100)


def _safe(v: float) -> bool:
    return math.isfinite(v) and SAFE[0] <= v <= SAFE[1]


def scale_rhs(data, bd, bnorm):
    """Return ``(bd', ||b'||, sb)``; ``sb = 1`` unless ``||b||`` is out of the safe range (``b = 0`` stays)."""
    if bnorm == 0.0 and data.max_exponent(bd) is None:
        return bd, 0.0, 1.0
    if _safe(bnorm):
        return bd, bnorm, 1.0
    sb = pow2_scale(data.max_exponent(bd))
    bd = data.combine(functools.partial(np.multiply, sb), bd)
    return bd, data.norm(bd), sb


def scale_vector(c):
    """``(c', sc)`` for a numpy right-hand side held locally (the minimum-norm problem's ``b``)."""
    top = float(np.max(np.abs(c))) if c.size else 0.0
    with np.errstate(over="ignore", under="ignore"):
        norm = float(np.linalg.norm(c)) if top else 0.0
    if top == 0.0 or _safe(norm):
        return c, 1.0
    sc = pow2_scale(math.frexp(top)[1])
    return c * sc, sc


def scale_sketch(data, SA, Sb, resketch):
    """Return ``(data', SA', Sb', sA)``: ``A`` scaled so that ``||S A'||_F`` is in the safe range.

    ``resketch(data)`` redoes the sketch pass (only when the first one overflowed).
    """
    # the largest entry, not ||S A||_F: its square may underflow to 0 for A ~ 1e-300
    top = float(np.max(np.abs(SA))) if np.all(np.isfinite(SA)) else float("inf")
    if top == 0.0 or (_safe(top) and _safe(top * math.sqrt(SA.size))):
        return data, SA, Sb, 1.0
    if math.isfinite(top):  # exact: S (sA A) = sA (S A)
        sA = pow2_scale(math.frexp(top)[1])
        return data.scaled(sA), SA * sA, Sb, sA
    sA = pow2_scale(data.max_exponent(), data.dtype)  # the sketch overflowed: one pass for the scale, one to redo it
    data = data.scaled(sA)
    SA, Sb = resketch(data)
    return data, SA, Sb, sA

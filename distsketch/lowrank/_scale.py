"""Reruns on ``2^-e A`` (exact) when the first read's results over- or underflow, shared by every
low-rank driver: ``svd``/``qb``/``nystrom`` (squared Frobenius norm out of range) and
``qrcp``/``interpolative``/``cur`` (the first sketch out of range)."""

from __future__ import annotations

from .._threads import between_passes
from ..backends import pow2_scale


class Rescale(Exception):
    """The first read over- or underflowed: rerun on ``2^-e A`` (exact) and un-scale the result."""


def rescaled(run, data, dense_flops=None):
    """``(run(data), 1.0)``, or ``(run(2^-e A), 2^-e)`` when ``run`` raised :class:`Rescale` (one
    more pass over ``A`` finds ``e``; the reads are then made again on the scaled view). The caller
    maps the result back (norms and singular values divided by the scale).

    ``dense_flops`` bounds the driver's largest dense step between passes (its small QRs and
    SVDs); when it is small and the pass workers share this machine's cores, the driver's BLAS
    calls run on the cores they leave (:func:`~distsketch._threads.between_passes`)."""
    with between_passes(data.busy_cores_here(), dense_flops):
        try:
            return run(data), 1.0
        except Rescale:
            scale = pow2_scale(data.max_exponent(), data.dtype)
            scale = 0.5 if scale == 1.0 else scale  # any exact power of two will do; 1 would not mark the view
            return run(data.scaled(scale)), scale

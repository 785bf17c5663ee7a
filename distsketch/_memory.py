"""Memory placement shared by the backends, the drivers and the Zarr reader: buffers at a 64-byte boundary.

BLAS may round differently for the same values at different addresses; code that must give
bit-identical results wherever its operands came from (a Zarr chunk, a checkpoint, another worker)
moves them to a 64-byte boundary first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["aligned_copy", "aligned_empty"]


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialised byte buffer of ``nbytes`` starting at a 64-byte boundary."""
    buf = np.empty(nbytes + 64, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64
    return buf[start:start + nbytes]


def aligned_copy(x: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``x`` whose data starts at a 64-byte boundary."""
    out = aligned_empty(x.nbytes).view(x.dtype).reshape(x.shape)
    out[...] = x
    return out

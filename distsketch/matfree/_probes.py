"""Seeded random probe blocks of the matrix-free methods (a pure function of seed and purpose)."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["PROBES", "probe_block", "generator"]

PROBES = ("rademacher", "gaussian")

# spawn-key slot of the matfree streams (distinct from the sketching operators' families)
_MATFREE = 0x6D66  # "mf"

#: purposes: which draw of a method a block belongs to
TRACE_SKETCH, TRACE_RESIDUAL, EIGSH_START, EIGSH_FILL, DENSITY = range(5)


def generator(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=(_MATFREE, purpose, index))))


def check_probe(probe: str) -> str:
    if probe not in PROBES:
        raise ParameterError(f"probe must be one of {PROBES}; got {probe!r}")
    return probe


def probe_block(seed: int, purpose: int, n: int, k: int, probe: str, dtype, index: int = 0) -> np.ndarray:
    """``n x k`` probes with ``E[z z^T] = I``: random signs or standard normals."""
    g = generator(seed, purpose, index)
    if probe == "rademacher":
        Z = 1.0 - 2.0 * g.integers(0, 2, size=(n, k), dtype=np.int8)
    else:
        Z = g.standard_normal((n, k))
    return np.asarray(Z, dtype=dtype)

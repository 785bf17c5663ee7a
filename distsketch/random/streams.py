"""Reproducible, chunking-independent random streams.

The idea is RandBLAS's: a random operator is a *distribution* plus an RNG *state*, and
any entry can be produced without producing the ones before it. numpy has no
per-entry counter API, so distsketch addresses randomness one level up, by **panel**.
The contracted dimension of a sketching operator is cut into fixed panels of
``panel`` indices (a power of two, 4096 by default), independent of how the data is
chunked. Panel ``p`` of the operator with identity ``(family, stream)`` under
``seed`` draws from its own ``numpy.random.Philox`` generator, keyed by

    SeedSequence(entropy=seed, spawn_key=(family, stream, p))

so that

* a block of the operator is produced from the panels it overlaps, alone, on any
  worker, and equals the same slice of the whole operator bit for bit;
* the same seed gives the same operator for any chunking, worker count or backend
  (numpy, Dask, MPI), and a task recomputed after a worker failure draws the same
  numbers;
* no more than one panel is ever held in memory per task.

The caller's seed object is never mutated: a ``numpy.random.Generator`` passed as
``seed`` is copied before one integer is drawn from the copy.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from ..errors import InputTypeError, ParameterError

__all__ = ["DEFAULT_PANEL", "resolve_seed", "panel_generator", "stream_generator"]

#: Default panel length along the contracted dimension (rows of ``A`` for ``S @ A``).
DEFAULT_PANEL = 4096

# spawn_key slot that marks a whole-operator draw (not tied to a panel), e.g. the
# row sample of the uniform family. Panels use non-negative indices below 2**62.
_WHOLE = 2**62


def resolve_seed(seed) -> int:
    """Turn any accepted seed into a non-negative int, without mutating the input.

    Parameters
    ----------
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        ``None`` draws fresh entropy from the operating system; the returned value
        records it so the run can be repeated. A ``Generator`` is deep-copied and one
        63-bit integer is drawn from the copy, so the caller's generator is unchanged.

    Returns
    -------
    int
        The seed actually used; store it in every result object.
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, (bool, np.bool_)):
        raise InputTypeError(f"seed must be None, a non-negative int, a SeedSequence or a Generator; got {seed!r}")
    if isinstance(seed, numbers.Integral):
        if int(seed) < 0:
            raise ParameterError(f"seed must be a non-negative integer; got {int(seed)}")
        return int(seed)
    if isinstance(seed, np.random.SeedSequence):
        if seed.spawn_key:
            # fold the spawn key into one integer so spawned children stay distinct
            return int(np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key).generate_state(2, np.uint64)[0])
        return int(seed.entropy)
    if isinstance(seed, np.random.Generator):
        return int(copy.deepcopy(seed).integers(0, 2**63 - 1))
    raise InputTypeError(
        "seed must be None, a non-negative int, a numpy SeedSequence or a numpy Generator; "
        f"got an object of type {type(seed).__name__}"
    )


def _generator(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=key)))


def panel_generator(seed: int, family: int, stream: int, panel: int) -> np.random.Generator:
    """The generator of one panel of one operator: a pure function of its arguments."""
    return _generator(seed, (int(family), int(stream), int(panel)))


def stream_generator(seed: int, family: int, stream: int) -> np.random.Generator:
    """A generator for draws that belong to the whole operator rather than a panel."""
    return _generator(seed, (int(family), int(stream), _WHOLE))

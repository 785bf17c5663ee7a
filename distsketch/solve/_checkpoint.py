"""Atomic checkpoints for iterative solves: a ``.npz`` of the state, renamed into place.

A checkpoint records two fingerprints and the seed:

* the call's (shapes, dtypes, options, seed, a checksum of every entry of ``b``):
  resuming with different arguments is refused with a ``ParameterError``;
* the data's (:attr:`distsketch.backends.RowData.fingerprint`, a checksum of every byte
  of ``A`` computed in the first pass): a resumed solve recomputes it in its first pass,
  before anything is saved or returned, and refuses other data with a ``DataChangedError``
  naming both values;
* the seed actually used, so a solve started with ``seed=None`` resumes with the same sketch.

A file that cannot be read (truncated, not a checkpoint) raises ``CheckpointError``
naming it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._atomic import atomic_file
from ..errors import CheckpointError, ParameterError

__all__ = ["Checkpoint", "MPICheckpoint"]

_META = ("__fingerprint__", "__data__", "__seed__")


class Checkpoint:
    """A checkpoint file at ``path`` for the call described by ``fingerprint`` (or bound later: :meth:`bind`)."""

    def __init__(self, path, fingerprint: dict | None = None):
        self.path = os.fspath(path)
        self.fingerprint = None if fingerprint is None else json.dumps(fingerprint, sort_keys=True, default=str)
        #: the RowData whose fingerprint is saved (set by the solver)
        self.data = None
        #: the data fingerprint read from the file by :meth:`load`
        self.saved_data = None

    @classmethod
    def of(cls, checkpoint) -> "Checkpoint":
        """A path as a :class:`Checkpoint`; a checkpoint object (an :class:`MPICheckpoint`) as it is."""
        return checkpoint if isinstance(checkpoint, Checkpoint) else cls(checkpoint)

    def bind(self, fingerprint: dict) -> "Checkpoint":
        """Describe the call whose state this file holds (a file for other arguments is refused on load)."""
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        return self

    def _read(self) -> dict | None:
        """Every array of the file, or None if there is none; CheckpointError if it cannot be read."""
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                state = {k: f[k] for k in f.files}
            str(state["__fingerprint__"])
        except Exception as exc:  # BadZipFile, EOFError, ValueError, KeyError, OSError, zlib.error ...
            raise CheckpointError(
                f"cannot read the checkpoint {self.path!r} ({type(exc).__name__}: {exc}); it is truncated or not "
                "a distsketch checkpoint: delete it to start the solve afresh"
            ) from None
        return state

    def saved_seed(self) -> int | None:
        """The seed the checkpointed solve used, or None without a (readable-seed) checkpoint."""
        state = self._read()
        if state is None or "__seed__" not in state:
            return None
        return int(state["__seed__"])

    def load(self) -> dict | None:
        state = self._read()
        if state is None:
            return None
        saved = str(state.pop("__fingerprint__"))
        if saved != self.fingerprint:
            raise ParameterError(
                f"checkpoint {self.path!r} was written by a solve with different arguments "
                f"({saved}); expected {self.fingerprint}. Remove it or pass another checkpoint path"
            )
        self.saved_data = str(state.pop("__data__")) if "__data__" in state else None
        state.pop("__seed__", None)
        if self.saved_data is None:
            raise CheckpointError(
                f"the checkpoint {self.path!r} records no fingerprint of its data, so it cannot be verified "
                "against the data read now; delete it to start the solve afresh"
            )
        return state

    def save(self, **state) -> None:
        fp = (self.data.fingerprint if self.data is not None else None) or self.saved_data
        meta = {"__fingerprint__": np.array(self.fingerprint)}
        if fp is not None:
            meta["__data__"] = np.array(fp)
        seed = json.loads(self.fingerprint).get("seed")
        if seed is not None:
            meta["__seed__"] = np.array(str(seed))
        with atomic_file(self.path, "wb") as f:
            np.savez(f, **meta, **state)

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


class MPICheckpoint(Checkpoint):
    """One checkpoint file per rank (``PREFIX.rankR.npz``), resumed only if every rank agrees.

    Ranks save at the same points of a collective algorithm, but a job killed between two
    ranks' saves leaves files from different iterations: on load the ranks compare what
    they hold and all start afresh unless the states match. An unreadable file on any
    rank raises ``CheckpointError`` on every rank (no rank is left waiting).
    """

    def __init__(self, prefix, comm):
        self.comm = comm
        self.prefix = str(prefix)
        self.path = f"{self.prefix}.rank{comm.rank}.npz"
        self.fingerprint = None
        self.data = None
        self.saved_data = None

    def bind(self, fingerprint: dict) -> "MPICheckpoint":
        self.fingerprint = json.dumps({**fingerprint, "ranks": self.comm.size}, sort_keys=True, default=str)
        return self

    def _collective(self, fn):
        """``fn()`` on every rank; a CheckpointError on any rank is raised on all of them."""
        err, out = None, None
        try:
            out = fn()
        except CheckpointError as exc:
            err = str(exc)
        errs = [e for e in self.comm.allgather(err) if e]
        if errs:
            raise CheckpointError(errs[0])
        return out

    def saved_seed(self):
        """The seed of the checkpointed solve if every rank's file records the same one, else None."""
        seeds = self.comm.allgather(self._collective(super().saved_seed))
        return seeds[0] if all(s == seeds[0] for s in seeds) else None

    def load(self):
        state = self._collective(super().load)
        key = None
        if state is not None:
            key = (str(state.get("stage")), int(state.get("passes_done", state.get("passes_sketch", -1))),
                   self.saved_data)
        keys = self.comm.allgather(key)
        if state is not None and all(k == keys[0] for k in keys):
            return state
        return None

    def remove(self):
        self.comm.Barrier()
        super().remove()

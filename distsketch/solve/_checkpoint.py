"""Atomic checkpoints for iterative solves: a ``.npz`` of the state, renamed into place.

A checkpoint records a fingerprint of the call (shapes, dtypes, options, seed, a
token of ``b``); resuming with different arguments is refused with a clear error
rather than silently mixing two problems.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ..errors import ParameterError

__all__ = ["Checkpoint"]


class Checkpoint:
    def __init__(self, path, fingerprint: dict):
        self.path = os.fspath(path)
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)

    def load(self) -> dict | None:
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
        saved = str(state.pop("__fingerprint__"))
        if saved != self.fingerprint:
            raise ParameterError(
                f"checkpoint {self.path!r} was written by a solve with different arguments "
                f"({saved}); expected {self.fingerprint}. Remove it or pass another checkpoint path"
            )
        return state

    def save(self, **state) -> None:
        folder = os.path.dirname(os.path.abspath(self.path)) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, __fingerprint__=np.array(self.fingerprint), **state)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


class MPICheckpoint(Checkpoint):
    """One checkpoint file per rank (``PREFIX.rankR.npz``), resumed only if every rank agrees.

    Ranks save at the same points of a collective algorithm, but a job killed between two
    ranks' saves leaves files from different iterations: on load the ranks compare what
    they hold and all start afresh unless the states match.
    """

    def __init__(self, prefix, comm):
        self.comm = comm
        self.prefix = str(prefix)
        self.path = f"{self.prefix}.rank{comm.rank}.npz"
        self.fingerprint = None

    def bind(self, fingerprint: dict) -> "MPICheckpoint":
        self.fingerprint = json.dumps({**fingerprint, "ranks": self.comm.size}, sort_keys=True, default=str)
        return self

    def load(self):
        state = super().load()
        key = None
        if state is not None:
            key = (str(state.get("stage")), int(state.get("passes_done", state.get("passes_sketch", -1))))
        keys = self.comm.allgather(key)
        if state is not None and all(k == keys[0] for k in keys):
            return state
        return None

    def remove(self):
        self.comm.Barrier()
        super().remove()

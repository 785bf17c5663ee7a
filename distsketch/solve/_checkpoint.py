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

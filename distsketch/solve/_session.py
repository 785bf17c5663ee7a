"""The checkpoint of one :func:`distsketch.lstsq` call: bind, resume, save.

A session wraps a :class:`~distsketch.solve._checkpoint.Checkpoint` (a path, or an
:class:`~distsketch.solve._checkpoint.MPICheckpoint` the MPI drivers pass) for one call:

* :meth:`CheckpointSession.open` binds the call's fingerprint (shape and dtype of ``A``, a
  checksum of every entry of ``b`` computed by the backend, a digest of ``c``, the options,
  the seed: a ``seed=None`` call takes the seed the checkpointed one drew) and loads the
  saved state, if any; the data is then expected to have the saved fingerprint, which the
  next pass verifies before anything is returned;
* the first checkpoint, after the first read, holds ``S A`` (and ``S b``, the scale of
  ``A``), or for ``normal_cholqr`` the Gram matrix of ``A`` and ``A.T b`` (with ``S A`` too
  once its fallback has read the sketch); every later one keeps them, so a resumed solve
  skips those reads;
* counters are restored through the backend (:meth:`RowData.restore_state`): the
  result's ``passes`` counts the reads of the whole solve, interrupted or not.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._checkpoint import Checkpoint

__all__ = ["CheckpointSession"]

#: what the first checkpoint holds (the sketch), kept in every later one
SKETCH_KEYS = ("SA", "Sb", "G_A", "h_A", "passes_sketch", "scale_A")


def _digest(c) -> str:
    """A digest of a small float64 vector (``c``), or ``"None"``."""
    return "None" if c is None else hashlib.sha256(np.ascontiguousarray(c, dtype=np.float64).tobytes()).hexdigest()


class CheckpointSession:
    """Checkpoint state of one solve; ``solve`` is the :class:`~distsketch.solve._runners.Solve` it serves."""

    def __init__(self, ckpt: Checkpoint, solve):
        self.ckpt = ckpt
        self.solve = solve
        #: the loaded state, or None for a fresh start
        self.state = None
        self._sketch = None

    @classmethod
    def open(cls, checkpoint, solve, *, b_checksum):
        """Bind ``checkpoint`` to the call, load its state and expect its data; None without a checkpoint.

        ``solve.seed`` becomes the saved seed when the caller gave none. ``b_checksum(solve)``
        names ``b`` in the fingerprint (called only here: it reads ``b``).
        """
        if checkpoint is None or solve.meth == "sketch_solve":  # one pass: nothing to resume
            return None
        req = solve.req
        ckpt = Checkpoint.of(checkpoint)
        if req.seed is None:  # resume with the seed the checkpointed solve drew
            saved_seed = ckpt.saved_seed()
            solve.seed = saved_seed if saved_seed is not None else solve.seed
        fp = {"shape": [req.m, req.n], "dtype": str(req.dtype), "b": b_checksum(solve), "c": _digest(req.c),
              "method": req.method, "atol": req.atol, "btol": req.btol, "maxiter": req.maxiter, "damp": req.damp,
              "seed": solve.seed, "sketch": (req.kind, solve.d), "x0": None if req.x0 is None else req.x0.tolist(),
              # 2: normal_cholqr factors A.T A itself (format 1 refined on the sketch's R: not resumable)
              "format": 2}
        ckpt.bind(fp)
        ckpt.data = solve.data
        self = cls(ckpt, solve)
        self.state = ckpt.load()
        if self.state is not None:  # the next pass re-reads every byte of A and must find the same fingerprint
            solve.data.expect_fingerprint(ckpt.saved_data, f"checkpoint {ckpt.path!r}")
        return self

    @property
    def stage(self) -> str | None:
        """The stage the loaded state was saved in (``sketch``, ``lsqr``, ``cholqr``, ``minnorm``), or None."""
        return None if self.state is None else str(self.state["stage"])

    def state_for(self, stage: str) -> dict | None:
        """The loaded state if it was saved in ``stage``: the runner of that stage resumes from it."""
        return self.state if self.stage == stage else None

    def saved_sketch(self):
        """``(SA, Sb, gram_A, sA)`` of the loaded state (``SA`` None when only the Gram of ``A`` was
        saved), with the pass counter restored; None for a fresh start."""
        st = self.state
        if st is None:
            return None
        self.solve.data.restore_state(passes=int(st["passes_sketch"]))
        self._sketch = {k: st[k] for k in SKETCH_KEYS if k in st}
        gram_A = (st["G_A"], st["h_A"]) if "G_A" in st else None
        sA = float(st["scale_A"]) if "scale_A" in st else 1.0
        return (st["SA"] if "SA" in st else None), (st["Sb"] if "Sb" in st else None), gram_A, sA

    def save_sketch(self, SA, Sb, gram_A, sA) -> None:
        """The first checkpoint: the sketch and/or the Gram of ``A`` (skipped on a resume whose state
        holds them already; a state with the Gram only gains the sketch read after it)."""
        if self.state is not None and (SA is None or "SA" in self.state):
            return
        save = {"passes_sketch": np.array(self.solve.data.passes), "scale_A": np.array(sA)}
        if SA is not None:
            save["SA"] = SA
        if Sb is not None:
            save["Sb"] = Sb
        if gram_A is not None:
            save["G_A"], save["h_A"] = gram_A
        self.ckpt.save(stage=np.array("sketch"), **save)
        self._sketch = save

    def restore_iteration(self) -> None:
        """The pass counter of a state saved during the iteration (no-op for a fresh start or a sketch-only state)."""
        if self.state is not None and "passes_done" in self.state:
            self.solve.data.restore_state(passes=int(self.state["passes_done"]))

    def save(self, **state) -> None:
        """A checkpoint of the iteration (what the solvers call): the sketch, the passes so far, ``state``."""
        self.ckpt.save(**self._sketch, passes_done=np.array(self.solve.data.passes), **state)

    def remove(self) -> None:
        self.ckpt.remove()

"""The pass protocol: what an algorithm may ask of the data, and what each backend promises.

An algorithm (least squares, low rank, spectra) receives a :class:`RowData` from
:func:`distsketch.backends.as_rowdata` and never asks which backend it runs on: it reads
``A`` only through :mod:`distsketch.passes` (built on :meth:`RowData.row_pass`) and handles
its tall ``m``-row factors only through the methods below.

A *pass* maps a kernel over the row blocks ``A_i = A[r0:r1, :]`` of the matrix::

    dist_out_i, reduced_i = kernel(A_i, r0, dist_in_i, *small)

* ``dist_in_i`` are the matching row blocks of distributed operands (vectors or
  thin matrices with ``m`` rows: ``b``, the LSQR vector ``u``), which stay where
  the rows live;
* ``small`` are small operands broadcast to every block (``v``, an operator);
* ``dist_out_i`` become new distributed operands, aligned with the rows of ``A``;
* ``reduced_i`` (a tuple of arrays) are summed over blocks in a fixed order.

Every call is one read of ``A`` and increments :attr:`RowData.passes`. The first
pass also checks that ``A`` (and every distributed operand flagged for checking) is
finite, and names the offending row range if not; and it folds a checksum of every
byte of every block into :attr:`RowData.fingerprint` (see :func:`block_checksum`):
a checkpoint records it, and a resumed solve refuses data whose fingerprint differs.

The contract
------------
Abstract (each backend implements them; numpy, Dask and MPI do):

=====================  =========================================================================
``row_pass``           one read of ``A``: kernel per row block, distributed outputs aligned with
                       the rows, reduced outputs summed in a fixed order; counts the pass, checks
                       finiteness and records the fingerprint on the first (or a re-armed) pass
``dist_pass``          the same over distributed operands only; ``A`` is not read, nothing counted
``distribute``         place an ``m``-row operand (``b``) beside the rows of ``A`` (checked finite)
``gather``             a distributed operand as one numpy array on this process (all of its rows;
                       for thin factors and vectors only)
``combine``            ``fn`` applied blockwise to aligned distributed operands
``norm``               2-norm of a distributed operand (reads the operand, not ``A``)
``output``             a distributed result in the caller's family: numpy for numpy data, a lazy
                       dask array for Dask data, this rank's rows for MPI data; optionally cast
``peek``               a small block ``A[r0:r1, c0:c1]`` as numpy (not a pass: no count, no check)
=====================  =========================================================================

Provided here, the same for every backend: ``passes``, ``checked``, ``fingerprint`` and
``expect_fingerprint`` (checkpoints), ``checksum`` (of a distributed operand such as ``b``,
for a checkpoint's arguments), ``restore_state`` (the counters a checkpoint recorded),
``scaled`` (an exact power-of-two view, :mod:`._scaled`) and ``max_exponent``, and the
hints ``persist``, ``prefer_sketch_blocks`` and ``transposed`` that a backend may
override. Attributes: ``shape``, ``dtype``, ``out_of_core`` (cost models weigh a pass by
it), ``lazy`` (distributed outputs may be deferred: an algorithm may then recompute a cheap
chain where it is used instead of storing it), ``cached`` (the blocks are held in memory),
``scale`` (1 unless this is a scaled view) and ``workers`` (blocks a pass runs at once, where
the backend decides it; ``None`` otherwise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataChangedError, NonFiniteError, ParameterError, ShapeError

__all__ = ["RowData", "block_checksum", "check_finite_block", "run_kernel"]

_MASK = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of each uint64 (wrapping arithmetic): a fixed pseudo-random odd weight per index."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) | np.uint64(1)


_COLW: dict = {}


def _word_weights(k: int) -> np.ndarray:
    """Odd uint32 weights of the ``k`` 32-bit words of a row (``b`` in :func:`block_checksum`)."""
    if k not in _COLW:
        _COLW[k] = (_splitmix64(np.arange(k, dtype=np.uint64) + np.uint64(1 << 62)) & np.uint64(0xFFFFFFFF)
                    ).astype(np.uint32) | np.uint32(1)
    return _COLW[k]


def block_checksum(X: np.ndarray, r0: int) -> np.ndarray:
    """Checksum of rows ``r0:r0+len(X)`` of the matrix (a uint64 array of one element).

    Each row is read as ``k`` little-endian 32-bit words ``w_j`` (two per float64, one per
    float32) and reduced to ``s_r = sum_j b(j) w_j mod 2**32``; the block's value is
    ``sum_r a(r0 + i) s_r mod 2**64``, with ``a``, ``b`` fixed odd weights of the global row
    and word index (SplitMix64). A change of any one word always changes the value (odd
    weights are invertible), and the values of the blocks of any row partition add up
    (mod 2**64) to the same total: it does not depend on the chunking, the backend, the
    number of workers or the order of the additions. Cost: one uint32 product over the
    block (SIMD, no copy for C-ordered rows), several GB/s per core.
    """
    if X.ndim == 1:
        X = X[:, None]
    if X.dtype.itemsize % 4:
        X = X.astype(np.float64)
    rows = X.shape[0]
    if rows == 0 or X.size == 0:  # an empty block (a zero-row chunk) adds nothing
        return np.zeros(1, dtype=np.uint64)
    W = np.ascontiguousarray(X).view(np.uint32).reshape(rows, -1)
    s = np.einsum("ij,j->i", W, _word_weights(W.shape[1]), optimize=False)  # wraps mod 2**32
    a = _splitmix64(np.arange(r0, r0 + rows, dtype=np.uint64))
    return np.array([np.sum(a * s.astype(np.uint64), dtype=np.uint64)], dtype=np.uint64)


def check_finite_block(X: np.ndarray, r0: int, what: str = "A", c0: int = 0) -> None:
    """Raise :class:`NonFiniteError` naming the chunk if ``X`` (rows ``r0:``) holds NaN/Inf.

    The fast path is one column sum (NaN and Inf propagate through it); the exact
    scan runs only when that sum is not finite.
    """
    if X.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        s = X.sum(axis=0)
    if np.isfinite(s).all():
        return
    bad = ~np.isfinite(X)
    if not bad.any():  # the sum overflowed on finite data
        return
    i, j = np.argwhere(bad)[0]
    ncols = X.shape[1] if X.ndim == 2 else 1
    hint = ("distsketch needs finite data: clean or mask these entries first"
            if not np.isnan(X).all() else
            "every value of the chunk is NaN: a chunk missing from a Zarr store written by distsketch (NaN "
            "fill value) reads like this, so the chunk is probably missing; restore or regenerate the store")
    raise NonFiniteError(
        f"{what} holds {int(bad.sum())} non-finite value(s) in the chunk of rows {r0}:{r0 + X.shape[0]}, "
        f"columns {c0}:{c0 + ncols} (first: {X[i, j]} at row {r0 + int(i)}, column {c0 + int(j)}); " + hint
    )


def _finite(parts) -> bool:
    return all(np.isfinite(p).all() for p in parts)


def run_kernel(kernel, Ai, r0, dist_i, small, check: bool):
    """Run one block of a pass; with ``check``, verify that ``Ai`` is finite.

    ``kernel`` is a :class:`distsketch.passes.Kernel` (a plain function is taken as one
    that does not propagate). A kernel marked ``propagates_nonfinite`` multiplies every entry of ``Ai`` by a
    nonzero (``S A`` for a mixing ``S``, ``A v``, ``A.T A``): a NaN or Inf anywhere in the
    block then shows in its outputs, so only non-finite outputs trigger the exact scan
    and a clean block costs no extra sweep. Other kernels scan the block first.

    With ``check`` the block's :func:`block_checksum` is appended to the reduced outputs
    (the backend sums it with the others and takes it off with :meth:`RowData._take_checksum`).
    """
    propagates = getattr(kernel, "propagates_nonfinite", False)
    if check and not propagates:
        check_finite_block(Ai, r0)
    douts, reds = kernel(Ai, r0, dist_i, *small)
    if check and propagates and not (_finite(douts) and _finite(reds)):
        check_finite_block(Ai, r0)
    if check:
        reds = tuple(reds) + (block_checksum(Ai, r0),)
    return douts, reds


def _k_operand_checksum(r0, dist):
    x = dist[0]
    h = int(block_checksum(np.asarray(x if x.ndim == 2 else x[:, None]), r0)[0])
    return (), (np.array([(h >> (16 * k)) & 0xFFFF for k in range(4)], dtype=np.float64),)


class RowData(ABC):
    """An ``m x n`` matrix held in row blocks, with a pass counter.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    passes : int
        Number of reads of the whole matrix made so far (one per :meth:`row_pass`).
    """

    shape: tuple[int, int]
    dtype: np.dtype
    #: whether a pass reads storage (cost models weigh passes by this)
    out_of_core: bool = False
    #: whether distributed outputs of :meth:`dist_pass` may be deferred (computed where used)
    lazy: bool = False
    #: whether the row blocks are held in memory, so a stored factor costs no re-read
    cached: bool = False
    #: the exact power-of-two factor this view applies to ``A`` (:meth:`scaled`); 1 for the data itself
    scale: float = 1.0
    #: row blocks a pass runs at once on this process, where the backend decides it (in memory);
    #: ``None`` where a scheduler does (Dask) or one block per rank (MPI). Cost models read it
    workers: int | None = None

    def __init__(self):
        self.passes = 0
        self._checked = False
        self._fingerprint = None
        self._expected = None

    @property
    def checked(self) -> bool:
        """Whether a completed pass has verified that the data is finite."""
        return self._checked

    @abstractmethod
    def row_pass(
        self,
        kernel: Callable,
        *,
        dist: Sequence[Any] = (),
        small: Sequence[Any] = (),
        dist_out: Sequence[tuple[int, np.dtype]] = (),
    ) -> tuple[tuple, tuple]:
        """Run ``kernel`` over every row block; return ``(dist_outputs, reduced_sums)``.

        ``dist_out`` gives ``(n_columns, dtype)`` of each distributed output so lazy
        backends can describe them before they are computed.
        """

    @abstractmethod
    def dist_pass(self, kernel: Callable, *, dist: Sequence[Any] = (), small: Sequence[Any] = (),
                  dist_out: Sequence[tuple[int, np.dtype]] = ()) -> tuple[tuple, tuple]:
        """Like :meth:`row_pass` over distributed operands only: ``A`` is not read, no pass is counted.

        ``kernel(r0, dist_i, *small) -> (dist_out_i, reduced_i)``. Used for the thin
        ``m x k`` factors of low-rank methods (Gram matrices, ``Y R^{-1}``).
        """

    @abstractmethod
    def distribute(self, x, *, check: bool = True):
        """Place an ``m``-row operand (``b``, an initial vector) alongside the rows of ``A``.

        With ``check`` its finiteness is verified (eagerly or in the next pass).
        """

    @abstractmethod
    def gather(self, x) -> np.ndarray:
        """Bring a distributed operand to this process as a numpy array."""

    @abstractmethod
    def combine(self, fn: Callable, *xs, ncols: int | None = None, dtype=None):
        """Apply ``fn`` blockwise to aligned distributed operands (no read of ``A``)."""

    @abstractmethod
    def norm(self, x) -> float:
        """Euclidean (Frobenius) norm of a distributed operand; reads the operand, not ``A``."""

    @abstractmethod
    def output(self, x, *, dtype=None):
        """A distributed ``m``-row result in the family the caller gave ``A`` in, cast to ``dtype``.

        numpy data: a numpy array; Dask data: a dask array (lazy, aligned with the row chunks of
        ``A``, nothing computed); MPI data: this rank's rows (the rank's share of the result, as
        every rank holds its share of ``A``). Nothing is gathered, and no pass is counted.
        """

    @abstractmethod
    def peek(self, rows: slice, cols: slice) -> np.ndarray:
        """The small block ``A[rows, cols]`` as a numpy array on this process (every rank, for MPI).

        For cheap checks before the first pass (symmetry of a few blocks): not a pass, so it is
        neither counted nor checked for finiteness. Keep it small (``128 x 128``).
        """

    def busy_cores_here(self) -> int:
        """Cores of this machine that the workers of this data's passes take, under BLAS limits of
        their own: the caller's dense work between passes leaves them free
        (:func:`distsketch._threads.between_passes`). Dask: the threads of the Client's worker
        processes on this machine; numpy: the pass threads when there are several; 0 where the
        passes run with the caller's own threads (one numpy worker, an MPI rank on its cores)."""
        return 0

    def checksum(self, x) -> int:
        """Checksum of every entry of a distributed ``m``-row operand (``b``): reads ``x``, not ``A``.

        The sum mod ``2**64`` of :func:`block_checksum` over its blocks, so the same for any
        chunking, backend and worker count (the ``A`` part of :attr:`fingerprint`, for an
        operand). Each block's value travels as four 16-bit limbs in float64, which every
        backend's reduction adds exactly (up to ``2**37`` blocks).
        """
        _, (limbs,) = self.dist_pass(_k_operand_checksum, dist=(x,))
        return sum(int(v) << (16 * k) for k, v in enumerate(np.asarray(limbs).ravel())) & _MASK

    @property
    def fingerprint(self) -> str | None:
        """Checksum of every byte of the matrix (with its dtype and shape), known after the first pass.

        ``"float64[m x n]:<16 hex digits>"``: the sum over blocks of :func:`block_checksum`,
        the same for any chunking, backend and worker count. ``None`` before the first pass.
        """
        return self._fingerprint

    def expect_fingerprint(self, value: str, where: str) -> None:
        """Refuse the data unless its fingerprint is ``value`` (a checkpoint's, named by ``where``).

        Checked at once if the fingerprint is known, else at the end of the next checked
        pass, before its results are returned: a resumed solve sees no result of changed data.
        """
        self._expected = (str(value), str(where))
        if self._fingerprint is not None:
            self._verify()
        else:
            self._checked = False  # the next pass reads every byte and computes the fingerprint

    def _verify(self) -> None:
        value, where = self._expected
        if self._fingerprint != value:
            raise DataChangedError(
                f"the data is not the data {where} was written for: its fingerprint is {self._fingerprint}, the "
                f"checkpoint's is {value}. The matrix changed since the checkpoint was saved; delete the "
                "checkpoint to solve the new data from the start, or restore the original data to resume"
            )

    def _take_checksum(self, total, check: bool, combine=None) -> tuple:
        """Remove the checksum a checked pass appended to ``total``; record (and verify) the fingerprint.

        ``combine`` sums the local checksum over processes (MPI), as an ``int`` mod 2**64.
        """
        if not check:
            return total
        *rest, h = total
        h = int(np.asarray(h).ravel()[0])
        if combine is not None:
            h = combine(h) & _MASK
        m, n = self.shape
        self._fingerprint = f"{np.dtype(self.dtype).name}[{m}x{n}]:{h:016x}"
        if self._expected is not None:
            self._verify()
        return tuple(rest)

    def restore_state(self, *, passes: int | None = None, checked: bool | None = None) -> None:
        """Restore the counters a checkpoint recorded, for a solve that resumes from it.

        ``passes``: the reads of ``A`` made before the checkpoint was saved, so that the
        result's ``passes`` counts every read of the whole solve. ``checked``: whether those
        reads verified the data finite. ``checked=True`` is refused while a fingerprint
        is expected (:meth:`expect_fingerprint`): the next pass must read every byte.
        """
        if passes is not None:
            if int(passes) != passes or passes < 0:
                raise ParameterError(f"passes must be a non-negative integer; got {passes!r}")
            self.passes = int(passes)
        if checked is not None:
            if checked and self._expected is not None and self._fingerprint is None:
                raise ParameterError("checked=True while a checkpoint's fingerprint is expected: the next pass "
                                     "must read every byte of A to verify it; restore only the pass count")
            self._checked = bool(checked)

    def scaled(self, scale: float) -> "RowData":
        """This data seen as ``scale * A`` (an exact power of two): every block is scaled as it
        is read; passes and checks are counted on ``self`` (:class:`~._scaled.ScaledRowData`)."""
        from ._scaled import ScaledRowData

        return ScaledRowData(self, scale)

    def max_exponent(self, x=None) -> int | None:
        """``e`` with ``max |A_ij|`` in ``[2^(e-1), 2^e)``: one pass (for a distributed ``x``: none,
        its entries instead). ``None`` when every entry is zero."""
        from ._scaled import max_exponent

        return max_exponent(self, x)

    def transposed(self) -> "RowData":
        """The same data held as its transpose ``A.T`` (for a wide matrix), without a copy.

        In-memory and Dask backends re-wrap ``A.T``; a backend whose rows are distributed
        over processes (MPI) cannot, and raises :class:`~distsketch.errors.ShapeError`.
        """
        raise ShapeError(f"{type(self).__name__} holds row blocks of a {self.shape[0]} x {self.shape[1]} matrix "
                         "and cannot hold its transpose; store the matrix transposed (tall) or pass it as a "
                         "numpy or dask array")

    def persist(self, x):
        """Store a deferred distributed operand that will be used several times (eager backends: ``x``)."""
        return x

    def prefer_sketch_blocks(self, d: int) -> None:
        """Hint before a pass that returns a ``d x n`` partial sketch per block: a backend that
        chooses its own blocks (in memory) may make them larger; others ignore it."""

    def _count(self) -> bool:
        """Record a pass; return whether this pass must check finiteness."""
        self.passes += 1
        return not self._checked

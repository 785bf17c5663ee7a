"""The arguments of :func:`distsketch.lstsq`, checked before any read of ``A``.

:func:`validate` returns a :class:`Request`: ``A`` in a backend (:func:`~distsketch.backends.as_rowdata`,
which also refuses complex, masked, sparse or non-array input), ``b`` through the input layer
(paths, Zarr arrays, dtypes), the small vectors ``c`` and ``x0`` as float64, and every option
in range. Nothing here reads ``A``; what needs the data (a ``damp`` whose square overflows
relative to ``||A||``) is checked after the sketch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._inputs import as_matrix
from ..backends import RowData, as_rowdata
from ..errors import InputTypeError, NonFiniteError, ParameterError, ShapeError

__all__ = ["Request", "validate", "sketch_keywords", "METHODS"]

METHODS = ("auto", "sketch_solve", "sketch_precondition", "cholqr", "normal_cholqr")


@dataclass(frozen=True)
class Request:
    """A checked :func:`~distsketch.lstsq` call.

    ``data`` holds ``A`` as the caller gave it (``m x n``, either orientation); ``built``
    says whether lstsq made that backend itself (it may then choose its row blocks);
    ``b`` is the caller's right-hand side (numpy or dask, length ``m``).
    """

    data: RowData
    built: bool
    b: Any
    method: str
    atol: float
    btol: float
    maxiter: int | None
    damp: float
    c: np.ndarray | None
    x0: np.ndarray | None
    seed: Any
    kind: str
    d: int | None
    conlim: float
    #: the keyword the caller sized the sketch with (``d``, or the deprecated ``sketch_size``): messages name it
    d_name: str = "d"

    @property
    def m(self) -> int:
        return self.data.shape[0]

    @property
    def n(self) -> int:
        return self.data.shape[1]

    @property
    def minnorm(self) -> bool:
        """``m < n``: the minimum-norm solution of ``A x = b``, solved on ``A.T``."""
        return self.m < self.n

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)


def sketch_keywords(kind, d, sketch_kind, sketch_size) -> tuple[str, int | None, str]:
    """``(kind, d, name of the size keyword)`` from lstsq's keywords, the deprecated ones included.

    ``sketch_kind``/``sketch_size`` were lstsq's names for what :func:`distsketch.sketch`,
    :func:`distsketch.operators.make_operator`, the operators' attributes and the command
    line call ``kind`` and ``d``; they still work, with a ``DeprecationWarning``.
    """
    if sketch_kind is not None:
        warnings.warn("lstsq(sketch_kind=...) is deprecated: pass kind=... (the name distsketch.sketch and "
                      "make_operator use)", DeprecationWarning, stacklevel=3)
        if kind not in ("sparse_sign", sketch_kind):
            raise ParameterError(f"kind={kind!r} and sketch_kind={sketch_kind!r} disagree; pass kind only "
                                 "(sketch_kind is its deprecated name)")
        kind = sketch_kind
    name = "d"
    if sketch_size is not None:
        warnings.warn("lstsq(sketch_size=...) is deprecated: pass d=... (the name distsketch.sketch and "
                      "make_operator use)", DeprecationWarning, stacklevel=3)
        if d is not None and d != sketch_size:
            raise ParameterError(f"d={d!r} and sketch_size={sketch_size!r} disagree; pass d only "
                                 "(sketch_size is its deprecated name)")
        d, name = sketch_size, "sketch_size"
    return kind, d, name


def validate(A, b, *, method, atol, btol, maxiter, damp, c, seed, x0, kind, d, conlim, d_name="d") -> Request:
    """Every check of lstsq's arguments that needs no pass over ``A``; a :class:`Request`."""
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; expected one of {METHODS}")
    for name, val in (("atol", atol), ("btol", btol), ("damp", damp)):
        if not (isinstance(val, (int, float)) and val >= 0 and math.isfinite(val)):
            raise ParameterError(f"{name} must be a finite number >= 0; got {val!r}")
    if maxiter is not None and (int(maxiter) != maxiter or maxiter < 0):
        raise ParameterError(f"maxiter must be a non-negative integer; got {maxiter!r}")
    data = as_rowdata(A)
    m, n = data.shape
    if m == 0 or n == 0:
        raise ShapeError(f"A is empty (shape {data.shape}); least squares needs m >= 1 and n >= 1")
    bm = as_matrix(b, "b", ndim=(1, 2))
    if bm.ndim == 2 and bm.shape[1] != 1:
        raise ShapeError(f"b must be a vector (m,) or (m, 1); got shape {bm.shape}")
    if bm.shape[0] != m:
        raise ShapeError(f"b must have m={m} entries to match A {data.shape}; got shape {bm.shape}")
    bm = bm[:, 0] if bm.ndim == 2 else bm
    minnorm = m < n
    if c is not None:
        c = _small_vector(c, "c")
        if minnorm:
            raise ParameterError("c (the saddle-point problem) needs m >= n; for m < n pass A.T and b=0, c=b")
        if c.shape != (n,):
            raise ShapeError(f"c must have n={n} entries; got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ParameterError("c holds NaN or Inf")
    if minnorm and damp:
        raise ParameterError("damp with m < n is not supported; solve the ridge problem for A.T or pass m >= n")
    if x0 is not None:
        x0 = _small_vector(x0, "x0")
        if x0.shape != (n,) or minnorm:
            raise ShapeError(f"x0 must have n={n} entries (and m >= n); got shape {x0.shape}")
        if not np.all(np.isfinite(x0)):
            raise NonFiniteError(f"x0 holds {int(np.sum(~np.isfinite(x0)))} NaN or Inf value(s) (first at index "
                                 f"{int(np.flatnonzero(~np.isfinite(x0))[0])}); pass a finite starting point or "
                                 "x0=None (the sketch-and-solve start)")
    if method == "sketch_solve" and c is not None:
        raise ParameterError("sketch_solve does not solve the saddle-point problem (c given): its y = b - A x "
                             "would need a pass of its own; use method='cholqr' or 'auto'")
    if method == "sketch_solve" and minnorm:
        raise ParameterError(f"sketch_solve solves m >= n problems; A is {m} x {n} (wide): use method='cholqr' "
                             "or 'auto' for the minimum-norm solution")
    T_n = m if minnorm else n  # columns of the tall factor the sketch must embed
    if d is not None:
        if not (isinstance(d, (int, np.integer)) and not isinstance(d, bool)):
            raise ParameterError(f"{d_name} must be an integer; got {d!r}")
        if d < T_n:
            raise ParameterError(
                f"{d_name}={d} is smaller than {'m' if minnorm else 'n'}={T_n}: a sketch needs at "
                f"least as many rows as the {'rows' if minnorm else 'columns'} of A to embed its "
                f"{'row' if minnorm else 'column'} space; use {d_name} >= {T_n} (default "
                f"{4 * T_n}, {2 * T_n} for cholqr) or omit it")
    if minnorm and method == "sketch_precondition":
        raise ParameterError("sketch_precondition solves m >= n problems; use method='cholqr' or 'auto' for m < n")
    if c is not None and method == "sketch_precondition":
        raise ParameterError("the c-term is solved by method='cholqr' (or 'auto')")
    return Request(data=data, built=data is not A, b=bm, method=method, atol=atol, btol=btol, maxiter=maxiter,
                   damp=damp, c=c, x0=x0, seed=seed, kind=kind, d=None if d is None else int(d), conlim=conlim,
                   d_name=d_name)


def _small_vector(v, name):
    """A length-n option (``c``, ``x0``) as a float64 vector; complex or ragged input is refused."""
    try:
        arr = np.asarray(v)
    except ValueError as exc:
        raise ShapeError(f"{name} must be a vector of numbers; got a ragged sequence ({exc})") from None
    if arr.dtype.kind not in "iufb":
        raise InputTypeError(f"{name} must hold real numbers; got dtype {arr.dtype}. Pass the real part explicitly "
                             "if that is what you mean")
    return arr.astype(np.float64).ravel()

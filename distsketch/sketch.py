"""The one entry point for sketching: :func:`sketch`."""

from __future__ import annotations

import numpy as np

from ._inputs import as_matrix, is_lazy
from .backends import DaskRowData, NumpyRowData
from .backends._protocol import check_finite_block
from .errors import ParameterError, ShapeError
from .operators import KINDS, make_operator
from .passes import (K_LEFT_SKETCH, K_LEFT_SKETCH_SAMPLING, K_RIGHT_SKETCH, K_RIGHT_SKETCH_SAMPLING,
                     left_sketch)

__all__ = ["sketch"]


def sketch(A, d: int, *, kind: str = "sparse_sign", side: str = "left", seed=None, nnz: int = 8,
           stream: int = 0, return_operator: bool = False):
    """Sketch a matrix (or several sharing rows) with a seeded, chunking-independent operator.

    Parameters
    ----------
    A : array_like, dask.array.Array, zarr.Array, str or path, or a list of these
        The data, ``m x n``. A list ``[A, b, ...]`` of operands with the same number of
        rows is sketched by the same ``S`` (``side="left"`` only): ``[S A, S b, ...]``.
        1-D operands are treated as one column and returned 1-D.
    d : int
        Sketch size: rows of ``S A`` (``side="left"``) or columns of ``A Omega``
        (``side="right"``).
    kind : {"sparse_sign", "gaussian", "srct", "uniform"}
    side : {"left", "right"}
        ``"left"``: ``S @ A`` with ``S`` of shape ``d x m``. ``"right"``: ``A @ Omega``
        with ``Omega = S.T`` of shape ``n x d``.
    seed : None, int, SeedSequence or Generator
        ``None`` draws fresh entropy; pass ``return_operator=True`` to get it back (the
        operator records it in ``op.seed``). Never mutated.
    nnz : int
        Nonzeros per column of ``sparse_sign`` (1 is CountSketch).
    stream : int
        Operator identity under one seed.
    return_operator : bool
        Also return the :class:`~distsketch.operators.SketchOperator`.

    Returns
    -------
    numpy.ndarray or dask.array.Array (or a list of them), [operator]
        numpy in, numpy out (computed now, one read); dask, zarr or a path in, a lazy
        dask array out (nothing is read until it is computed).

    Raises
    ------
    ShapeError
        ``A`` is not 2-D, or operands have different numbers of rows.
    ParameterError
        Unknown ``kind`` or ``side``; ``d <= 0``; ``d > m`` for ``srct`` or ``uniform``;
        ``nnz > d``.
    NonFiniteError
        NaN or Inf in the data, found in the (first and only) pass, naming the chunk.
    ArrayNotFoundError
        A path that holds no Zarr array.

    Notes
    -----
    Entry ``S[i, j]`` depends only on ``(seed, kind, stream, d, nnz, i, j)``: the same
    seed gives the same operator for any chunking, backend or worker count, and the
    results agree to rounding. See :mod:`distsketch.random.streams`.

    Examples
    --------
    >>> import numpy as np, distsketch
    >>> A = np.random.default_rng(0).standard_normal((10_000, 20))
    >>> distsketch.sketch(A, 80, seed=1).shape
    (80, 20)
    """
    if kind not in KINDS:
        raise ParameterError(f"unknown sketch kind {kind!r}; expected one of {sorted(KINDS)}")
    if side not in ("left", "right"):
        raise ParameterError(f"side must be 'left' or 'right'; got {side!r}")
    multi = isinstance(A, (list, tuple)) and len(A) > 0 and not np.isscalar(A[0]) and np.ndim(A[0]) >= 1
    operands = list(A) if multi else [A]
    if side == "right" and multi:
        raise ParameterError("several operands share an operator only for side='left' (they share rows)")
    mats = []
    for k, X in enumerate(operands):
        X = as_matrix(X, "A" if k == 0 else f"operand {k}", ndim=(1, 2) if k else (2,))
        mats.append(X)
    m = mats[0].shape[0]
    for k, X in enumerate(mats[1:], 1):
        if X.shape[0] != m:
            raise ShapeError(
                f"operands sketched together must share their rows: A has {m} rows but operand {k} has "
                f"shape {X.shape}"
            )
    contracted = m if side == "left" else mats[0].shape[1]
    op = make_operator(kind, d, contracted, seed=seed, nnz=nnz, stream=stream)

    if not any(is_lazy(X) for X in mats):
        if side == "right":
            out = [np.ascontiguousarray(op.apply_right(mats[0], 0))]
            if not (op.mixes_all_rows and np.isfinite(out[0]).all()):
                check_finite_block(mats[0], 0)
        else:
            data = NumpyRowData(mats[0])
            out = left_sketch(data, op, extra=[data.distribute(X) for X in mats[1:]])
    else:
        # lazy: the same kernels and fixed-order tree sum as every other pass, as a graph whose
        # names are tokens of the data and the operator (nothing is read until it is computed)
        import dask.array as da

        lazy = [X if is_lazy(X) else da.from_array(X) for X in mats]
        data = DaskRowData(lazy[0])
        if side == "left":
            extra = [data.distribute(X) for X in lazy[1:]]
            kernel = K_LEFT_SKETCH if op.mixes_all_rows else K_LEFT_SKETCH_SAMPLING
            _, out = data.row_pass_lazy(kernel, dist=extra, small=((op,),),
                                        reduced_out=[((d, X.shape[1] if X.ndim == 2 else 1), X.dtype) for X in mats])
        else:
            kernel = K_RIGHT_SKETCH if op.mixes_all_rows else K_RIGHT_SKETCH_SAMPLING
            out, _ = data.row_pass_lazy(kernel, small=(op,), dist_out=((d, mats[0].dtype),))
    out = [o[:, 0] if X.ndim == 1 else o for o, X in zip(out, mats)]
    result = out if multi else out[0]
    return (result, op) if return_operator else result

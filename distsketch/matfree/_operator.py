"""Operators seen only through products: the adapter every matrix-free method starts from.

An *operator* is anything with ``shape`` (``(n, n)``), ``dtype`` and ``matmat(X)``
returning ``A @ X`` for an ``n x k`` block ``X``. :func:`aslinearoperator` turns a
dense array, a scipy sparse matrix, a scipy ``LinearOperator`` or such an object into
an :class:`Operator` that checks shapes, keeps a product count and returns numpy
arrays. :func:`gram_operator` is the Gram ``A.T A`` of a matrix held by any backend
(numpy, Dask/Zarr, MPI), one read of ``A`` per block of vectors.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputTypeError, NonFiniteError, ShapeError

__all__ = ["Operator", "GramOperator", "RowDataOperator", "aslinearoperator", "gram_operator"]


def _work_dtype(dtype) -> np.dtype:
    """float32 stays float32; every other real type computes in float64."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputTypeError(
            f"matfree methods need a real symmetric operator; got dtype {dtype}. "
            "Pass the real part, or an operator on the stacked real and imaginary parts")
    if dtype.kind not in "fiub":
        raise InputTypeError(f"the operator's dtype must be a real numeric type; got {dtype}")
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


class Operator:
    """A square operator ``A`` known through ``A @ X``.

    Attributes
    ----------
    shape : tuple of int
        ``(n, n)``.
    dtype : numpy.dtype
        The dtype products are computed in (float32 or float64).
    matvecs : int
        Products with single vectors made so far (a block of ``k`` columns counts ``k``).
    calls : int
        Calls of :meth:`matmat` made so far (blocks).
    """

    def __init__(self, matmat, shape, dtype, *, name: str = "operator"):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ShapeError(
                f"a matfree operator must be square (n x n, symmetric); got shape {shape}. "
                "For a rectangular matrix A use gram_operator(A), the operator A.T A")
        self._matmat = matmat
        self.shape = shape
        self.dtype = _work_dtype(dtype)
        self.name = name
        self.matvecs = 0
        self.calls = 0

    @property
    def n(self) -> int:
        return self.shape[0]

    def matmat(self, X) -> np.ndarray:
        """``A @ X`` for an ``n x k`` array (a 1-D ``X`` is one column); a numpy ``n x k`` array."""
        X = np.asarray(X)
        one = X.ndim == 1
        X2 = X[:, None] if one else X
        if X2.ndim != 2 or X2.shape[0] != self.n:
            raise ShapeError(f"matmat needs an array of {self.n} rows (n x k); got shape {X.shape}")
        Y = np.asarray(self._matmat(X2))
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.shape != X2.shape:
            raise ShapeError(
                f"the operator's product has shape {Y.shape}; an n x k block (n={self.n}) must give n x k "
                f"({X2.shape}). Check that the operator's matmat returns A @ X")
        if not np.isfinite(Y).all() and np.isfinite(X2).all():
            # a finite block in, NaN or Inf out: every estimate built on it would be NaN (or a LAPACK
            # "did not converge") with no word of why
            col = int(np.flatnonzero(~np.isfinite(Y).all(axis=0))[0])
            raise NonFiniteError(
                f"the operator {self.name} returned NaN or Inf for a finite input (product {self.calls + 1}, "
                f"column {col} of {X2.shape[1]}): check the operator (for a Hessian, the loss and model on "
                "this batch) before estimating anything from it")
        self.matvecs += X2.shape[1]
        self.calls += 1
        return Y[:, 0] if one else Y

    def matvec(self, x) -> np.ndarray:
        """``A @ x`` for one vector."""
        return self.matmat(np.asarray(x).reshape(-1))

    def __matmul__(self, X):
        return self.matmat(X)

    def __repr__(self):
        n = self.shape[0]
        return f"<{type(self).__name__} {self.name} {n}x{n} {self.dtype}, {self.matvecs} matvecs>"


class GramOperator(Operator):
    """The Gram operator ``A.T A`` (``n x n``) of an ``m x n`` matrix held by a backend.

    Each :meth:`matmat` is one read of ``A`` (:func:`distsketch.passes.gram_matmat`).

    Attributes
    ----------
    data : distsketch.backends.RowData
    reads : int
        Reads of ``A`` made through this operator (one per :meth:`matmat` call).
    """

    def __init__(self, data, *, seed=None):
        from .. import passes

        self.data = data
        self.seed = seed
        self._start = data.passes
        dtype = _work_dtype(data.dtype)
        super().__init__(lambda X: passes.gram_matmat(data, X.astype(dtype, copy=False)), (data.shape[1],) * 2,
                         dtype, name="gram")

    @property
    def reads(self) -> int:
        return self.data.passes - self._start


def _dense_product(A, X):
    """``A @ X``; one or two columns as matrix-vector products (OpenBLAS packs ``A`` for a
    GEMM, which for ``k = 2`` costs about twice two GEMVs: one more sweep over ``A``)."""
    if X.shape[1] == 2 and A.dtype == X.dtype:
        out = np.empty((A.shape[0], 2), dtype=np.result_type(A, X))
        out[:, 0], out[:, 1] = A @ X[:, 0], A @ X[:, 1]
        return out
    return A @ X


def _is_row_matrix(op) -> bool:
    """A dask array, a zarr array or a backend's RowData: a matrix read through the passes."""
    from ..backends import RowData

    if isinstance(op, RowData):
        return True
    mod = type(op).__module__ or ""
    return mod.startswith("dask.array") or mod.startswith("zarr")


class RowDataOperator(Operator):
    """A square symmetric matrix held by a backend (Dask/Zarr, MPI): ``A @ X`` is one read of ``A``.

    Attributes
    ----------
    data : distsketch.backends.RowData
    reads : int
        Reads of ``A`` made through this operator.
    """

    def __init__(self, A):
        from .. import passes
        from ..backends import as_rowdata

        data = as_rowdata(A)
        self.data = data
        self._start = data.passes
        dtype = _work_dtype(data.dtype)
        super().__init__(lambda X: data.gather(passes.matmul(data, X.astype(dtype, copy=False))), data.shape,
                         dtype, name="rowdata")

    @property
    def reads(self) -> int:
        return self.data.passes - self._start


def aslinearoperator(op) -> Operator:
    """Wrap ``op`` as an :class:`Operator` (``shape``, ``dtype``, ``matmat``, a product count).

    Parameters
    ----------
    op : numpy.ndarray, scipy sparse matrix, scipy.sparse.linalg.LinearOperator, dask or zarr array, Operator, or object
        A square symmetric matrix, or any object with ``shape``, ``dtype`` and
        ``matmat(X)`` (``A @ X`` for an ``n x k`` block). A dask or zarr array (or a
        :class:`~distsketch.backends.RowData`) is read through the passes, one read of
        ``A`` per block product, never held whole. An :class:`Operator` is returned as it
        is (its product count continues).

    Returns
    -------
    Operator

    Raises
    ------
    InputTypeError
        ``op`` has no ``matmat`` and is not an array, or its dtype is complex or not numeric.
    ShapeError
        ``op`` is not square.

    Notes
    -----
    Symmetry is assumed, not checked (a check would cost products). A dense array
    is used as it is (never copied or modified); an integer array computes in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from distsketch.matfree import aslinearoperator
    >>> op = aslinearoperator(np.diag([1.0, 2.0, 3.0]))
    >>> op.matmat(np.ones((3, 1))).ravel()
    array([1., 2., 3.])
    """
    if isinstance(op, Operator):
        return op
    if isinstance(op, np.ndarray) or isinstance(op, (list, tuple)):
        A = np.asarray(op)
        if A.ndim != 2:
            raise ShapeError(f"a dense operator must be a 2-D square array; got shape {A.shape}")
        dt = _work_dtype(A.dtype)
        return Operator(lambda X: _dense_product(A, X.astype(dt, copy=False)), A.shape, dt, name="dense")
    try:
        import scipy.sparse as sp

        if sp.issparse(op):
            dt = _work_dtype(op.dtype)
            return Operator(lambda X: np.asarray(op @ X.astype(dt, copy=False)), op.shape, dt, name="sparse")
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass
    if _is_row_matrix(op):
        return RowDataOperator(op)
    if hasattr(op, "shape") and hasattr(op, "dtype") and callable(getattr(op, "matmat", None)):
        dt = _work_dtype(op.dtype if op.dtype is not None else np.float64)
        return Operator(lambda X: op.matmat(X.astype(dt, copy=False)), op.shape, dt,
                        name=type(op).__name__)
    raise InputTypeError(
        "an operator must be a square numpy array, a scipy sparse matrix or LinearOperator, or an object "
        f"with shape, dtype and matmat(X); got an object of type {type(op).__name__}. "
        "For the Gram A.T A of a (distributed) matrix use gram_operator(A)")


def gram_operator(A, *, seed=None) -> GramOperator:
    """The operator ``A.T A`` of an ``m x n`` matrix, one read of ``A`` per product block.

    Parameters
    ----------
    A : numpy.ndarray, dask.array.Array, zarr.Array, str or distsketch.backends.RowData
        The matrix, in memory, lazy (Dask, a Zarr array or path: read chunk by chunk,
        never held whole) or MPI row blocks (an ``MPIRowData``).
    seed : None or int, optional
        Recorded on the operator (``op.seed``) for callers that key their runs by it;
        the products themselves are deterministic and use no randomness.

    Returns
    -------
    GramOperator
        ``shape == (n, n)``; ``reads`` counts the reads of ``A`` made through it.

    Notes
    -----
    ``matmat(X)`` (``X`` of ``k`` columns) is one pass over the row blocks ``A_i``,
    summing ``A_i.T (A_i X)`` in a fixed block order: ``4 m n k`` flops, one read of
    ``A``, memory ``O(n k)`` per block. The ``m x n`` Gram matrix is never formed;
    the eigenvalues of ``A.T A`` are the squared singular values of ``A``. Block
    methods (:func:`~distsketch.matfree.eigsh`, :func:`~distsketch.matfree.density`)
    multiply whole blocks, so one read serves several vectors.

    Examples
    --------
    >>> import numpy as np
    >>> from distsketch.matfree import gram_operator, eigsh
    >>> A = np.random.default_rng(0).standard_normal((500, 40))
    >>> G = gram_operator(A)
    >>> r = eigsh(G, 3, seed=0)
    >>> bool(np.allclose(r.eigenvalues, np.linalg.svd(A, compute_uv=False)[:3] ** 2))
    True
    """
    from ..backends import as_rowdata

    data = as_rowdata(A)
    if len(data.shape) != 2:  # pragma: no cover - as_rowdata checks
        raise ShapeError(f"gram_operator needs a 2-D matrix; got shape {data.shape}")
    return GramOperator(data, seed=seed)

"""Input coercion: numpy arrays, dask arrays, zarr arrays and Zarr paths/URLs.

Everything here is cheap (metadata only): no chunk of data is read.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ArrayNotFoundError, InputTypeError, ShapeError

__all__ = ["as_matrix", "is_lazy", "open_zarr_array", "float_dtype"]


def float_dtype(dtype) -> np.dtype:
    """The floating dtype distsketch computes in: float32 stays, float64 stays, ints/bools -> float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise InputTypeError(
        f"expected real floating-point, integer or boolean data; got dtype {dtype}. "
        "Convert complex or object data explicitly before sketching."
    )


def open_zarr_array(path):
    """Open a Zarr array read-only from a local path or an fsspec URL."""
    import zarr

    spath = os.fspath(path)
    try:
        arr = zarr.open_array(spath, mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
        raise ArrayNotFoundError(
            f"no Zarr array at {spath!r} ({type(exc).__name__}: {exc}); expected the path of a Zarr array "
            "(a group's member is addressed as 'store.zarr/name')"
        ) from None
    except Exception as exc:  # zarr raises several unrelated types for "not an array here"
        if type(exc).__name__ in {"ContainsGroupError", "GroupNotFoundError", "NodeNotFoundError"}:
            raise ArrayNotFoundError(f"no Zarr array at {spath!r}: {exc}") from None
        raise
    return arr


def is_lazy(A) -> bool:
    import dask.array as da

    return isinstance(A, da.Array)


def as_matrix(A, name: str = "A", *, ndim=(2,)):
    """Return ``A`` as a numpy array or a dask array of a floating dtype.

    Paths and zarr arrays become dask arrays chunked like the store. Raises before any
    data is read.
    """
    import dask.array as da

    if isinstance(A, (str, os.PathLike)):
        A = open_zarr_array(A)
    mod = type(A).__module__
    if mod.startswith("zarr"):
        A = da.from_zarr(A)
    if isinstance(A, da.Array):
        pass
    elif isinstance(A, np.ma.MaskedArray):
        nmask = int(np.ma.count_masked(A))
        if nmask:
            raise InputTypeError(
                f"{name} is a masked array with {nmask} masked entr{'y' if nmask == 1 else 'ies'}; distsketch needs "
                f"every entry: fill them ({name}.filled(value)) or drop the rows that hold them")
        A = np.asarray(A.data)  # nothing masked: the data itself
    elif type(A).__module__.startswith("scipy.sparse"):
        raise InputTypeError(f"{name} is a scipy sparse matrix ({type(A).__name__}); distsketch works on dense "
                             f"arrays: pass {name}.toarray() (or a dask array) instead")
    elif isinstance(A, np.ndarray) or hasattr(A, "__array__") or isinstance(A, (list, tuple)):
        try:
            A = np.asarray(A)
        except ValueError as exc:  # ragged nested lists
            raise ShapeError(f"{name} is a ragged sequence (rows of different lengths): {exc}; pass a rectangular "
                             "array") from None
    else:
        raise InputTypeError(
            f"{name} must be a numpy array, a dask array, a zarr array or the path of a Zarr array; "
            f"got {type(A).__name__}"
        )
    if A.ndim not in ndim:
        want = " or ".join(f"{k}-D" for k in ndim)
        raise ShapeError(f"{name} must be {want}; got an array with shape {A.shape}")
    try:
        dt = float_dtype(A.dtype)
    except InputTypeError:
        hint = ("complex data is not supported: pass the real part (A.real) if the imaginary part is zero, or "
                "solve real and imaginary parts as a real problem twice the size" if A.dtype.kind == "c"
                else "convert it to numbers first (A.astype(float))")
        raise InputTypeError(f"{name} has dtype {A.dtype}; distsketch needs real floating-point, integer or boolean "
                             f"data: {hint}") from None
    if A.dtype != dt:
        A = A.astype(dt)
    return A

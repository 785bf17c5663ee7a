"""Backends of the pass protocol: numpy (in memory), Dask (chunked, out of core), MPI (row ranges per rank).

An algorithm receives a :class:`RowData` and only ever calls the fused passes of
:mod:`distsketch.passes`; it never asks which backend it runs on.
"""

from ._protocol import RowData
from ._scaled import pow2_scale
from .numpy import NumpyRowData
from .dask import DaskRowData


def as_rowdata(A, **kwargs) -> RowData:
    """Wrap a numpy array, dask array, zarr array or Zarr path in the matching backend."""
    from .._inputs import as_matrix, is_lazy

    if isinstance(A, RowData):
        return A
    A = as_matrix(A)
    return DaskRowData(A, **kwargs) if is_lazy(A) else NumpyRowData(A, **kwargs)


def __getattr__(name):
    if name == "MPIRowData":  # imported lazily: mpi4py is an optional extra
        from .mpi import MPIRowData

        return MPIRowData
    raise AttributeError(name)


__all__ = ["RowData", "NumpyRowData", "DaskRowData", "MPIRowData", "as_rowdata", "pow2_scale"]

"""Matrix-free spectra: trace, extreme eigenpairs and spectral density from products only.

An operator is anything with ``shape``, ``dtype`` and ``matmat(X)`` (``A @ X`` for an
``n x k`` block): a dense array, a scipy ``LinearOperator``, the Gram ``A.T A`` of a
numpy/Dask/Zarr/MPI matrix (:func:`gram_operator`, one read of ``A`` per block), or a
Hessian (:mod:`distsketch.hessian`). The methods never know where the products come from.

=====================  =========================================================
:func:`trace`          Hutchinson, Hutch++, XTrace, with a standard error
:func:`eigsh`          extreme eigenpairs: restarted block Lanczos, full reorthogonalisation
:func:`density`        eigenvalue density and ``tr f(A)``: stochastic Lanczos quadrature
=====================  =========================================================
"""

from ._operator import GramOperator, Operator, RowDataOperator, aslinearoperator, gram_operator
from ._trace import TRACE_METHODS, TraceResult, trace
from ._eigsh import WHICH, EigshResult, eigsh
from ._density import DensityResult, density

__all__ = [
    "Operator",
    "GramOperator",
    "RowDataOperator",
    "aslinearoperator",
    "gram_operator",
    "trace",
    "TraceResult",
    "TRACE_METHODS",
    "eigsh",
    "EigshResult",
    "WHICH",
    "density",
    "DensityResult",
]

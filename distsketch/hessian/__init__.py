"""Neural-network loss Hessians as matrix-free operators, and their spectra (PyHessian parity).

:func:`hessian_operator` turns a torch model, a loss and data into an operator with ``shape``,
``dtype`` and ``matmat`` (Hessian-vector products, summed over batches in a fixed order,
optionally on Dask workers); :func:`analyze` reads its top eigenvalues, trace and spectral
density through :mod:`distsketch.matfree`; :func:`plot_density` draws the density.

Needs torch, an optional extra: ``pip install "distsketch[hessian]"``.
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import torch  # noqa: F401
except ImportError as exc:
    raise MissingDependencyError(
        'distsketch.hessian needs torch, which is not installed; install the extra with '
        'pip install "distsketch[hessian]" (torch==2.13.0, a CPU build).') from exc

from ._analyze import HessianAnalysis, analyze, plot_density
from ._operator import HessianOperator, hessian_operator

__all__ = ["HessianOperator", "hessian_operator", "HessianAnalysis", "analyze", "plot_density"]

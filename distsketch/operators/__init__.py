"""Sketching operators: Gaussian, sparse sign (CountSketch for nnz=1), block SRCT, uniform sampling.

Use :func:`make_operator` to build one by name; every operator is a frozen dataclass
that can be pickled to workers and regenerates its panels there.
"""

from __future__ import annotations

from ..errors import ParameterError
from ..random.streams import DEFAULT_PANEL, resolve_seed
from ._base import SketchOperator
from .gaussian import Gaussian, gaussian_panel
from .sparse_sign import SparseSign
from .srct import SRCT, srct_panel
from .uniform import Uniform

__all__ = ["SketchOperator", "Gaussian", "SparseSign", "SRCT", "Uniform", "KINDS", "make_operator"]

KINDS = {"gaussian": Gaussian, "sparse_sign": SparseSign, "srct": SRCT, "uniform": Uniform}


def make_operator(kind: str, d: int, m: int, *, seed=None, nnz: int = 8, stream: int = 0,
                  panel: int | None = None) -> SketchOperator:
    """Build a ``d x m`` sketching operator of family ``kind``.

    Parameters
    ----------
    kind : {"sparse_sign", "gaussian", "srct", "uniform"}
    d, m : int
        Sketch size and contracted dimension.
    seed : None, int, SeedSequence or Generator
        Resolved with :func:`distsketch.random.resolve_seed` (never mutated).
    nnz : int
        Nonzeros per column for ``sparse_sign``; ignored otherwise.
    stream : int
        Operator identity under one seed.
    panel : int, optional
        Panel length; the family's default when omitted (see each family).

    Raises
    ------
    ParameterError
        Unknown kind, ``d <= 0``, ``d > m`` for ``srct``/``uniform``, ``nnz > d``.
    """
    if kind not in KINDS:
        raise ParameterError(f"unknown sketch kind {kind!r}; expected one of {sorted(KINDS)}")
    if not isinstance(d, (int,)) and int(d) != d:
        raise ParameterError(f"d must be a positive integer; got {d!r}")
    if d <= 0:
        raise ParameterError(f"sketch size d must be a positive integer; got d={d}")
    seed = resolve_seed(seed)
    if panel is None:
        panel = {"gaussian": gaussian_panel(int(d)), "srct": srct_panel(int(d))}.get(kind, DEFAULT_PANEL)
    cls = KINDS[kind]
    kwargs = {"nnz": int(nnz)} if kind == "sparse_sign" else {}
    return cls(d=int(d), m=int(m), seed=seed, stream=int(stream), panel=int(panel), **kwargs)

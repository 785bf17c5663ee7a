"""Top eigenvalues, trace and spectral density of a loss Hessian (PyHessian's three readings)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..random.streams import resolve_seed
from ._operator import hessian_operator

__all__ = ["HessianAnalysis", "analyze", "plot_density"]


@dataclass(frozen=True)
class HessianAnalysis:
    """What :func:`analyze` measured of a loss Hessian ``H`` (``n_params x n_params``).

    Attributes
    ----------
    eigenvalues : numpy.ndarray
        The ``top_k`` largest (algebraic) eigenvalues, descending (empty if ``top_k=0``).
    eigenvectors : numpy.ndarray
        ``n_params x top_k``, in the order of ``eigenvalues`` (split into the parameters'
        shapes with ``HessianOperator.to_tensors``).
    residuals : numpy.ndarray
        ``||H x_i - lambda_i x_i||`` of the returned pairs, from products with the returned vectors.
    converged : bool
        Whether every residual is ``<= tol * |lambda|_max`` (checked, see
        :func:`distsketch.matfree.eigsh`); True when ``top_k=0``.
    trace, trace_stderr : float
        Hutch++ estimate of ``tr(H)`` and its standard error (NaN when ``trace=False``).
    density_grid, density : numpy.ndarray
        The Gaussian-broadened eigenvalue density (stochastic Lanczos quadrature) on its
        grid; integrates to 1. Empty when ``density=False``.
    density_nodes, density_weights : numpy.ndarray
        The quadrature rules (one row per probe) behind ``density``.
    hvps : int
        Hessian-vector products over the whole data set, all three readings together.
    hvps_eigenvalues, hvps_trace, hvps_density : int
        Their shares.
    seconds : float
        Wall time of the analysis (the operator's construction included).
    n_params, n_samples : int
    seed : int
        The seed the three estimators were derived from.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    converged: bool
    trace: float
    trace_stderr: float
    density_grid: np.ndarray
    density: np.ndarray
    density_nodes: np.ndarray
    density_weights: np.ndarray
    hvps: int
    hvps_eigenvalues: int
    hvps_trace: int
    hvps_density: int
    seconds: float
    n_params: int
    n_samples: int
    seed: int


def _nonneg_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
        raise ParameterError(f"{name} must be a non-negative integer; received {v!r}.")
    return int(v)


def analyze(model, loss_fn, data, *, params=None, top_k: int = 1, trace: bool = True, density: bool = True,
            tol: float = 1e-6, trace_matvecs: int = 99, n_vectors: int = 4, n_steps: int = 64,
            sigma: float | None = None, seed=None, method: str = "func", client=None) -> HessianAnalysis:
    """Top eigenvalues, trace and eigenvalue density of a model's loss Hessian over ``data``.

    The three readings PyHessian makes (power iteration, Hutchinson, SLQ), here by block
    Lanczos with full reorthogonalisation, Hutch++ and blocked stochastic Lanczos quadrature
    from :mod:`distsketch.matfree`, on :func:`hessian_operator` ``(model, loss_fn, data)``.

    Parameters
    ----------
    model, loss_fn, data, params, method, client
        As for :func:`hessian_operator`.
    top_k : int, default 1
        Largest eigenvalues to compute (0: none).
    trace, density : bool, default True
        Whether to estimate the trace and the density.
    tol : float, default 1e-6
        Relative residual of the eigenpairs: ``||H x - lambda x|| <= tol * |lambda|_max``.
    trace_matvecs : int, default 99
        Hessian-vector products for Hutch++ (a third sketch, a third exact part, a third probes).
    n_vectors, n_steps : int, default 4 and 64
        SLQ probes and Lanczos steps per probe (``n_steps`` is capped at ``n_params``).
    sigma : float, optional
        Gaussian broadening of the density (default: see :func:`distsketch.matfree.density`).
    seed : None, int, numpy SeedSequence or Generator
        Seeds the three estimators (independent streams derived from it); recorded in the result.

    Returns
    -------
    HessianAnalysis

    Raises
    ------
    ParameterError
        ``top_k`` negative or above ``n_params``; anything :func:`hessian_operator` or the
        estimators refuse.

    Notes
    -----
    Cost in Hessian-vector products over the whole data set: block Lanczos until converged
    (typically a few tens times ``top_k``, plus ``top_k`` for the residual check),
    ``trace_matvecs`` for the trace and ``n_vectors * n_steps`` for the density, each
    product formed batch by batch. Products are multiplied in blocks (one pass over the data
    per block), which is where the speed over one-vector-at-a-time methods comes from.

    References
    ----------
    .. [1] Yao, Gholami, Keutzer, Mahoney, "PyHessian: Neural networks through the lens of the
       Hessian", arXiv 1912.07145.
    .. [2] Meyer, Musco, Musco, Woodruff, "Hutch++: Optimal stochastic trace estimation",
       arXiv 2010.09649.
    .. [3] Ghorbani, Krishnan, Xiao, "An investigation into neural net optimization via Hessian
       eigenvalue density", arXiv 1901.10159; Lin, Saad, Yang, "Approximating spectral
       densities of large matrices", arXiv 1308.5467.

    Examples
    --------
    >>> import torch
    >>> from distsketch.hessian import analyze
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    >>> x, y = torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,))
    >>> r = analyze(model, torch.nn.CrossEntropyLoss(), (x, y), top_k=2, seed=0, client=False)
    >>> r.eigenvalues.shape, bool(r.converged), r.n_params
    ((2,), True, 67)
    """
    from .. import matfree

    t0 = time.perf_counter()
    top_k = _nonneg_int("top_k", top_k)
    trace_matvecs = _nonneg_int("trace_matvecs", trace_matvecs)
    n_vectors = _nonneg_int("n_vectors", n_vectors)
    n_steps = _nonneg_int("n_steps", n_steps)
    from ..matfree._trace import _MIN as _TRACE_MIN

    if trace and trace_matvecs < _TRACE_MIN["hutch++"]:  # before any Hessian-vector product is spent
        raise ParameterError(f"trace_matvecs must be >= {_TRACE_MIN['hutch++']} for the Hutch++ trace; received "
                             f"{trace_matvecs}. Give more products, or trace=False")
    base = resolve_seed(seed)
    # three independent streams, one per estimator, all fixed by ``base``
    s_eig, s_tr, s_den = (int(s.generate_state(1, np.uint64)[0] >> np.uint64(1))
                          for s in np.random.SeedSequence(base).spawn(3))
    op = hessian_operator(model, loss_fn, data, params=params, method=method, client=client)
    try:
        n = op.n_params
        if top_k > n:
            raise ParameterError(f"top_k must be at most the number of parameters ({n}); received {top_k}.")
        empty = np.zeros(0)
        evals, evecs, res, conv, h_eig = empty, np.zeros((n, 0), dtype=op.dtype), empty, True, 0
        if top_k:
            before = op.hvps
            r = matfree.eigsh(op, top_k, which="LA", tol=tol, seed=s_eig)
            evals, evecs, res, conv = r.eigenvalues, r.eigenvectors, r.residuals, bool(r.converged)
            h_eig = op.hvps - before
        tr, tr_err, h_tr = float("nan"), float("nan"), 0
        if trace:
            before = op.hvps
            t = matfree.trace(op, method="hutch++", matvecs=trace_matvecs, seed=s_tr)
            tr, tr_err, h_tr = float(t.estimate), float(t.stderr), op.hvps - before
        grid, dens, nodes, weights, h_den = empty, empty, np.zeros((0, 0)), np.zeros((0, 0)), 0
        if density:
            before = op.hvps
            d = matfree.density(op, n_vectors=n_vectors, n_steps=min(n_steps, n), sigma=sigma, seed=s_den)
            grid, dens, nodes, weights = d.grid, d.values, d.nodes, d.weights
            h_den = op.hvps - before
    finally:
        op.close()
    return HessianAnalysis(
        eigenvalues=np.asarray(evals), eigenvectors=np.asarray(evecs), residuals=np.asarray(res), converged=conv,
        trace=tr, trace_stderr=tr_err, density_grid=np.asarray(grid), density=np.asarray(dens),
        density_nodes=np.asarray(nodes), density_weights=np.asarray(weights), hvps=op.hvps,
        hvps_eigenvalues=h_eig, hvps_trace=h_tr, hvps_density=h_den, seconds=time.perf_counter() - t0,
        n_params=op.n_params, n_samples=op.n_samples, seed=int(base))


def plot_density(result, *, ax=None, log: bool = True, eigenvalues: bool = True):
    """Draw the eigenvalue density of an :func:`analyze` result (PyHessian's figure).

    Parameters
    ----------
    result : HessianAnalysis
        With a density (``analyze(..., density=True)``).
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).
    log : bool, default True
        Logarithmic density axis (the outliers are many orders below the bulk).
    eigenvalues : bool, default True
        Mark the computed top eigenvalues with vertical lines.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ParameterError
        The result holds no density.
    """
    if not isinstance(result, HessianAnalysis) or result.density.size == 0:
        raise ParameterError("plot_density needs the result of analyze(..., density=True); received "
                             f"{type(result).__name__} without a density. Run analyze with density=True.")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    floor = np.finfo(float).tiny
    ax.plot(result.density_grid, np.maximum(result.density, floor) if log else result.density, lw=1.2,
            label="density (SLQ)")
    if log:
        ax.set_yscale("log")
        top = float(np.max(result.density))
        ax.set_ylim(max(top * 1e-8, floor), top * 2)
    if eigenvalues:
        for i, lam in enumerate(result.eigenvalues):
            ax.axvline(lam, color="C3", ls="--", lw=0.8, label="top eigenvalues" if i == 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    title = f"Hessian eigenvalue density ({result.n_params} parameters)"
    if np.isfinite(result.trace):
        title += f"\ntrace {result.trace:.4g} ± {result.trace_stderr:.2g}"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax

"""Spectral density by stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, ShapeError
from ..random.streams import resolve_seed
from ._operator import aslinearoperator
from ._probes import DENSITY, check_probe, probe_block

__all__ = ["DensityResult", "density"]

DEFAULT_VECTORS = 8
DEFAULT_STEPS = 64
DEFAULT_GRID = 1001


@dataclass(frozen=True)
class DensityResult:
    """A smoothed eigenvalue density and the Gauss quadrature rules it is built from.

    Attributes
    ----------
    grid : numpy.ndarray
        Points ``t`` where the density is evaluated.
    values : numpy.ndarray
        ``phi(t) = (1/N) sum_v sum_j w_vj g_sigma(t - theta_vj)``, ``g_sigma`` the normal
        density of standard deviation ``sigma``: integrates to 1 over the real line
        (over ``grid`` to within the mass of the Gaussian tails outside it).
    nodes : numpy.ndarray
        ``N x s``: the Ritz values ``theta_vj`` of each probe's Lanczos tridiagonal (Gauss nodes).
    weights : numpy.ndarray
        ``N x s``: the squared first components of its eigenvectors (Gauss weights, each
        row sums to 1). A probe whose Krylov space became invariant before ``s`` steps has
        fewer nodes: the unused slots have weight 0 (and repeat its first node).
    matvecs : int
    sigma : float
    n : int
        The operator's dimension (``trace_of`` scales by it).
    seed : int
    probe : str
    """

    grid: np.ndarray
    values: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    matvecs: int
    sigma: float
    n: int
    seed: int
    probe: str = "rademacher"

    def trace_of(self, f) -> float:
        """``tr f(A) ~ n * mean_v sum_j w_vj f(theta_vj)``: exact in expectation for polynomials
        of degree ``< 2 s``; ``f`` is a vectorised function (``np.log``, ``lambda t: t**2``)."""
        vals = np.asarray(f(self.nodes), dtype=np.float64)
        vals = np.where(self.weights > 0, vals, 0.0)
        return float(self.n * np.mean(np.sum(self.weights * vals, axis=1)))

    def moment(self, j: int) -> float:
        """``tr(A^j) / n`` estimated from the quadrature (``j >= 0``)."""
        return self.trace_of(lambda t: t ** j) / self.n


def _positive_int(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ParameterError(f"{name} must be an integer >= {lo}; got {v!r}")
    return int(v)


def _lanczos_blocked(op, Z, steps, reorth):
    """``N`` independent Lanczos processes, one per column of ``Z`` (unit norm), advanced together.

    Returns the tridiagonals as ``alpha`` (``N x s``), ``beta`` (``N x (s-1)``) and the number
    of steps each took. One block product per step (``N`` matvecs), on the columns still
    running. Invariant: ``A q_j = beta_{j-1} q_{j-1} + alpha_j q_j + beta_j q_{j+1}``.
    """
    n, N = Z.shape
    dt = Z.dtype
    alpha = np.zeros((N, steps))
    beta = np.zeros((N, steps))
    done = np.full(N, steps)
    Qs = np.zeros((steps, n, N), dtype=dt) if reorth else None
    q, q_prev, b_prev = Z.copy(), np.zeros_like(Z), np.zeros(N)
    act = np.ones(N, dtype=bool)
    scale = np.zeros(N)
    # relative to the largest |alpha| + beta seen, which an outlier eigenvalue sets: at float32's eps the
    # cut-off (5e-4 ||A|| at n = 2,000) ended the bulk's runs after 2-3 steps whenever an outlier was
    # ~1e3 x the bulk (a Hessian's usual shape). float64's eps keeps them going; a float32 run that
    # is truly invariant then goes on to s steps on rounding noise, whose nodes carry ~no weight
    tiny = 100 * np.finfo(np.float64).eps * math.sqrt(n)
    for j in range(steps):
        if reorth:
            Qs[j] = q
        w = np.zeros_like(q)
        w[:, act] = op.matmat(q[:, act])
        a = np.einsum("ij,ij->j", q.astype(np.float64), w.astype(np.float64))
        alpha[act, j] = a[act]
        w -= q * a.astype(dt) + q_prev * b_prev.astype(dt)  # finished probes have q = 0: w stays 0
        if reorth:  # full reorthogonalisation against every earlier vector of the same probe, twice
            for _ in range(2):
                c = np.einsum("tin,in->tn", Qs[:j + 1], w)
                w -= np.einsum("tin,tn->in", Qs[:j + 1], c)
        bnext = np.linalg.norm(w.astype(np.float64), axis=0)
        scale = np.maximum(scale, np.abs(a) + bnext + b_prev)
        if j == steps - 1:
            break
        # a (numerically) invariant Krylov space ends that probe's run: its rule is already exact
        stop = act & (bnext <= tiny * scale)
        done[stop] = j + 1
        act &= ~stop
        if not act.any():
            break
        beta[act, j] = bnext[act]
        q_prev, b_prev = q, np.where(act, bnext, 0.0)
        q = np.where(act[None, :], w / np.where(act, bnext, 1.0).astype(dt), 0).astype(dt, copy=False)
    return alpha, beta, done


def density(op, *, n_vectors: int = DEFAULT_VECTORS, n_steps: int = DEFAULT_STEPS, sigma: float | None = None,
            grid=None, probe: str = "rademacher", reorthogonalize: bool = True, seed=None) -> DensityResult:
    """The eigenvalue density of a symmetric operator, by stochastic Lanczos quadrature.

    Parameters
    ----------
    op : operator
        Anything :func:`~distsketch.matfree.aslinearoperator` accepts (``n x n``, symmetric).
    n_vectors : int
        Random probes ``N`` (default 8): independent Lanczos runs, multiplied together as
        one block per step.
    n_steps : int
        Lanczos steps ``s`` per probe (default 64, at most ``n``): nodes per quadrature rule.
    sigma : float, optional
        Width of the Gaussian broadening. Default: 1% of the spread of the nodes (or
        ``0.01 * max(|theta|, 1)`` when they all coincide).
    grid : int or array, optional
        Evaluation points, or their number (default 1001) spread over
        ``[min theta - 6 sigma, max theta + 6 sigma]``.
    probe : {"rademacher", "gaussian"}
    reorthogonalize : bool
        Full reorthogonalisation within each probe's run (default; memory ``N n s``).
        Without it memory is ``O(N n)`` but lost orthogonality duplicates outer nodes
        (the weights stay correct in sum; the density is unchanged in the limit).
    seed : None, int, SeedSequence or Generator

    Returns
    -------
    DensityResult

    Raises
    ------
    ParameterError
        ``n_vectors``, ``n_steps`` or ``grid`` not a positive integer; ``sigma`` not positive.
    ShapeError
        ``grid`` given as an array that is not 1-D.

    Notes
    -----
    For each unit probe ``v = z / ||z||``, ``s`` Lanczos steps give a tridiagonal ``T``; its
    eigenvalues ``theta_j`` and the squared first components ``w_j`` of its eigenvectors are
    the ``s``-point Gauss rule of the measure ``mu_v = sum_i (v^T u_i)^2 delta_{lambda_i}``
    [1]_, [2]_: ``sum_j w_j p(theta_j) = v^T p(A) v`` for polynomials of degree ``< 2s``.
    As ``E[v v^T] = I/n`` for Rademacher probes, ``mean_v sum_j w_j p(theta_j)`` is an unbiased
    estimate of ``tr p(A) / n``; the density smooths the ``N s`` weighted nodes with a
    Gaussian [3]_ (as PyHessian [4]_ does). Costs: ``N s`` products in ``s`` blocks (``s``
    reads of the data for a Gram operator), ``O(N n s^2)`` flops of reorthogonalisation.

    References
    ----------
    .. [1] G. H. Golub, G. Meurant, "Matrices, Moments and Quadrature with Applications",
       Princeton 2010.
    .. [2] L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large matrices",
       SIAM Review 58 (2016), arXiv:1308.5467.
    .. [3] B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net optimization via
       Hessian eigenvalue density", ICML 2019, arXiv:1901.10159.
    .. [4] Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian: Neural networks through the
       lens of the Hessian", arXiv:1912.07145.

    Examples
    --------
    >>> import numpy as np
    >>> from distsketch.matfree import density
    >>> A = np.diag(np.linspace(0.0, 1.0, 300))
    >>> d = density(A, n_vectors=4, n_steps=20, seed=0)
    >>> round(float(np.trapezoid(d.values, d.grid)), 6)
    1.0
    """
    n_vectors = _positive_int("n_vectors", n_vectors)
    n_steps = _positive_int("n_steps", n_steps)
    probe = check_probe(probe)
    if sigma is not None and not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma)
                                  and sigma > 0):
        raise ParameterError(f"sigma must be a positive finite number (the broadening width); got {sigma!r}")
    if grid is not None and not isinstance(grid, (int, np.integer)):
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.size < 2:
            raise ShapeError(f"grid must be a 1-D array of at least 2 points or a number of points; "
                             f"got shape {grid.shape}")
    elif grid is not None:
        grid = _positive_int("grid", grid, lo=2)
    op = aslinearoperator(op)
    seed = resolve_seed(seed)
    n, dt = op.n, op.dtype
    if n == 0:
        raise ShapeError("density needs an operator of dimension n >= 1; got a 0 x 0 one (it has no eigenvalues)")
    steps = min(n_steps, n)
    start = op.matvecs
    Z = probe_block(seed, DENSITY, n, n_vectors, probe, dt)
    Z /= np.linalg.norm(Z, axis=0)
    alpha, beta, done = _lanczos_blocked(op, Z, steps, reorthogonalize)
    nodes = np.zeros((n_vectors, steps))
    weights = np.zeros((n_vectors, steps))
    for i in range(n_vectors):
        s = int(done[i])
        T = np.diag(alpha[i, :s]) + np.diag(beta[i, :s - 1], 1) + np.diag(beta[i, :s - 1], -1)
        th, U = np.linalg.eigh(T)
        nodes[i, :s], weights[i, :s] = th, U[0] ** 2
        nodes[i, s:] = th[0]
    valid = weights > 0
    lo, hi = float(nodes[valid].min()), float(nodes[valid].max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1.0)
    sigma = float(sigma)
    if grid is None or isinstance(grid, int):
        grid = np.linspace(lo - 6 * sigma, hi + 6 * sigma, DEFAULT_GRID if grid is None else grid)
    # phi(t) = mean_v sum_j w_vj exp(-(t - theta_vj)^2 / (2 sigma^2)) / (sigma sqrt(2 pi))
    th, w = nodes[valid], weights[valid] / n_vectors
    values = np.zeros_like(grid)
    for c in range(0, th.size, 4096):
        d = (grid[:, None] - th[None, c:c + 4096]) / sigma
        values += np.exp(-0.5 * d * d) @ w[c:c + 4096]
    values /= sigma * math.sqrt(2 * math.pi)
    return DensityResult(grid, values, nodes, weights, op.matvecs - start, sigma, n, seed, probe)

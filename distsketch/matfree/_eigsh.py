"""Extreme eigenpairs of a symmetric operator: restarted block Lanczos with full reorthogonalisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..random.streams import resolve_seed
from ._operator import aslinearoperator
from ._probes import EIGSH_FILL, EIGSH_START, generator, probe_block

__all__ = ["EigshResult", "eigsh", "WHICH"]

WHICH = ("LA", "SA", "LM")
DEFAULT_MAXITER = 1000


@dataclass(frozen=True)
class EigshResult:
    """``k`` eigenpairs ``A x_i = lambda_i x_i`` of a symmetric operator.

    Attributes
    ----------
    eigenvalues : numpy.ndarray
        ``k`` values, sorted as ``which`` says: ``"LA"`` and ``"LM"`` descending (by value,
        by magnitude), ``"SA"`` ascending.
    eigenvectors : numpy.ndarray
        ``n x k``, orthonormal columns, in the order of ``eigenvalues``.
    residuals : numpy.ndarray
        ``||A x_i - lambda_i x_i||`` of the returned pairs, from a product with the
        returned vectors (not from the recurrence).
    converged : bool
        Whether every residual is ``<= tol * |lambda|_max`` (``|lambda|_max``: the largest
        Ritz value in magnitude seen, an estimate of ``||A||``).
    matvecs : int
        Products with ``A`` (block columns), the final residual check included.
    iterations : int
        Block products ``A @ V_j`` of the Lanczos process (reads of the data for a Gram operator:
        ``iterations + 1`` with the final check).
    which : str
    tol : float
    seed : int
    message : str
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    converged: bool
    matvecs: int
    iterations: int = 0
    which: str = "LA"
    tol: float = 1e-8
    seed: int = 0
    message: str = ""


def _basis_size(n, k, b):
    """Largest basis before a thick restart."""
    return min(n, max(4 * k + 4 * b, k + 10 * b, 40))


def _select(theta, k, which):
    """Indices of the ``k`` wanted Ritz values, in output order."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")[:k]
    if which == "SA":
        return np.argsort(theta, kind="stable")[:k]
    return np.argsort(-np.abs(theta), kind="stable")[:k]


def _orth_block(V, W, seed, it, dt):
    """Orthonormal columns spanning ``W`` outside ``span(V)``; lost directions refilled at random.

    Block classical Gram-Schmidt against ``V`` applied twice ("twice is enough"), then a QR
    of the block. When a column loses more than ``1 - 1e-10`` of its norm (an invariant
    subspace was found), the block is redone column by column and each such column is
    replaced by a seeded random vector orthogonalised the same way.
    """
    X = W.astype(dt, copy=True)
    for _ in range(2):
        if V.shape[1]:
            X -= V @ (V.T @ X)
    Q, R = np.linalg.qr(X)
    norms = np.linalg.norm(W, axis=0)
    if np.all(np.abs(np.diag(R)) > 1e-10 * norms) and np.all(norms > 0):
        return Q
    n, b = W.shape
    P = np.empty((n, b), dtype=dt)
    g = None
    for j in range(b):
        w = W[:, j].astype(dt, copy=True)
        w0 = np.linalg.norm(w)
        for attempt in range(8):
            for _ in range(2):
                if V.shape[1]:
                    w -= V @ (V.T @ w)
                if j:
                    w -= P[:, :j] @ (P[:, :j].T @ w)
            nw = np.linalg.norm(w)
            if nw > 1e-10 * w0 and nw > 0:
                break
            g = g or generator(seed, EIGSH_FILL, it)
            w = g.standard_normal(n).astype(dt)
            w0 = np.linalg.norm(w)
        P[:, j] = w / nw
    return P


def eigsh(op, k: int, *, which: str = "LA", tol: float = 1e-8, maxiter: int | None = None,
          block_size: int | None = None, seed=None) -> EigshResult:
    """The ``k`` extreme eigenpairs of a symmetric operator, from block products only.

    Parameters
    ----------
    op : operator
        Anything :func:`~distsketch.matfree.aslinearoperator` accepts (``n x n``, symmetric).
    k : int
        Number of eigenpairs, ``1 <= k <= n``.
    which : {"LA", "SA", "LM"}
        Largest algebraic, smallest algebraic, or largest magnitude.
    tol : float
        Relative residual: pair ``i`` has converged when
        ``||A x_i - lambda_i x_i|| <= tol * |lambda|_max``.
    maxiter : int, optional
        Most block products ``A @ V_j`` (default 1000).
    block_size : int, optional
        Columns per product, at most ``n``. Default ``k`` (1 for ``k = 1``: a repeated top
        eigenvalue is still found; any vector of its eigenspace is an answer). A block of ``b``
        columns resolves eigenvalues of multiplicity up to ``b``: with ``b < k`` an eigenvalue
        repeated more than ``b`` times among the wanted ones shows at most ``b`` copies, and the
        pairs returned are then eigenpairs (``converged`` checks their residuals) but not the
        ``k`` extreme ones; the message says so. With a Gram operator a block is one read of
        the data: larger blocks mean fewer reads and usually more products.
    seed : None, int, SeedSequence or Generator
        Seeds the starting block; the result records it.

    Returns
    -------
    EigshResult

    Raises
    ------
    ParameterError
        ``k`` not in ``1..n``; unknown ``which``; ``tol``, ``maxiter`` or ``block_size`` not positive.

    Notes
    -----
    Block Lanczos [1]_ in Krylov-Schur form: the basis ``V`` (``n x p``) and ``A V`` are kept;
    each step multiplies the newest block, orthogonalises the product against all of ``V``
    twice (full reorthogonalisation, so no ghost eigenvalues), and runs Rayleigh-Ritz on
    ``H = V^T A V``. Invariant: ``A V`` lies in ``span(V, P)`` with ``P`` the next block.
    When ``p`` would exceed ``ncv = min(n, max(4k + 4b, k + 10b, 40))`` the basis restarts
    thick [2]_ to the wanted end of the Ritz vectors (no products spent: ``V <- V Y``,
    ``A V <- (A V) Y``), which keeps the invariant. Convergence is tested on the Ritz
    residuals ``||(A V) y - theta V y||`` each step, and the returned ``residuals`` are
    recomputed from one more block product ``A X`` (``k`` matvecs); ``converged`` is
    decided on those. Costs per step: ``b`` products, ``O(n p b)`` flops of
    orthogonalisation, an ``O(p^3)`` eigensolve; memory ``2 n ncv``.

    In float32 the residual cannot fall much below ``1e-6 |lambda|_max``: ask for ``tol``
    around ``1e-5`` there.

    References
    ----------
    .. [1] G. H. Golub, R. Underwood, "The block Lanczos method for computing eigenvalues",
       Mathematical Software III (1977); Y. Saad, "Numerical Methods for Large Eigenvalue
       Problems", 2nd ed., SIAM 2011, ch. 6.
    .. [2] K. Wu, H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue
       problems", SIMAX 22 (2000); G. W. Stewart, "A Krylov-Schur algorithm for large
       eigenproblems", SIMAX 23 (2001).

    Examples
    --------
    >>> import numpy as np
    >>> from distsketch.matfree import eigsh
    >>> A = np.diag(np.arange(1.0, 101.0))
    >>> r = eigsh(A, 3, seed=0)
    >>> r.eigenvalues.round(8), r.converged
    (array([100.,  99.,  98.]), True)
    """
    op = aslinearoperator(op)
    n, dt = op.n, op.dtype
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ParameterError(f"k must be an integer with 1 <= k <= n = {n}; got {k!r}")
    if which not in WHICH:
        raise ParameterError(f"which must be one of {WHICH}; got {which!r}")
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ParameterError(f"tol must be a positive finite number; got {tol!r}")
    if maxiter is not None and (isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer))
                                or maxiter < 1):
        raise ParameterError(f"maxiter must be a positive integer (block products); got {maxiter!r}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer))
                                   or block_size < 1):
        raise ParameterError(f"block_size must be a positive integer; got {block_size!r}")
    k = int(k)
    seed = resolve_seed(seed)
    maxiter = DEFAULT_MAXITER if maxiter is None else int(maxiter)
    b = min(n, int(block_size) if block_size else k)
    ncv = _basis_size(n, k, b)
    keep = max(k, min(ncv - b, k + (ncv - k - b) // 2))
    start = op.matvecs

    P = _orth_block(np.empty((n, 0), dt), probe_block(seed, EIGSH_START, n, b, "gaussian", dt), seed, 0, dt)
    Vb = np.empty((n, ncv), dt)  # the basis V = Vb[:, :p] and A V = AVb[:, :p]
    AVb = np.empty((n, ncv), dt)
    Hb = np.zeros((ncv, ncv))  # H = V^T A V
    p = 0
    it = 0
    while it < maxiter and P.shape[1]:
        W = op.matmat(P)
        it += 1
        q = P.shape[1]
        Vb[:, p:p + q], AVb[:, p:p + q] = P, W
        C = Vb[:, :p + q].T.astype(np.float64) @ W.astype(np.float64)
        Hb[:p + q, p:p + q] = C
        Hb[p:p + q, :p + q] = C.T
        p += q
        V, AV = Vb[:, :p], AVb[:, :p]
        H = Hb[:p, :p]
        theta, Y = np.linalg.eigh((H + H.T) / 2)
        idx = _select(theta, k, which)
        Yk = Y[:, idx].astype(dt)
        res = np.linalg.norm(AV @ Yk - (V @ Yk) * theta[idx].astype(dt), axis=0)
        scale = float(np.max(np.abs(theta)))
        ok = bool(np.all(res <= tol * scale)) if scale > 0 else bool(np.all(res == 0))
        ok = ok and len(idx) == k  # an invariant space of fewer than k vectors (A = I, b < k) is not the answer
        if ok or p >= n:
            break
        # the next block: A V_j outside span(V), reorthogonalised twice
        P = _orth_block(V, W[:, :min(b, n - p)], seed, it, dt)
        if p + P.shape[1] > ncv:
            # thick restart to the wanted Ritz vectors: A (V y) = theta V y + P (P^T A V y)
            order = _select(theta, keep, which)
            Yr = Y[:, order].astype(dt)
            Vb[:, :keep], AVb[:, :keep] = V @ Yr, AV @ Yr
            Hb[:] = 0.0
            Hb[:keep, :keep] = np.diag(theta[order])
            p = keep
    V, AV = Vb[:, :p], AVb[:, :p]
    # the returned pairs, with residuals from a product with the returned vectors
    theta, Y = np.linalg.eigh(V.T.astype(np.float64) @ AV.astype(np.float64) if p else np.zeros((0, 0)))
    idx = _select(theta, k, which)
    X = V @ Y[:, idx].astype(dt)
    X, _ = np.linalg.qr(X)  # re-orthonormalise (the Ritz vectors are, to rounding)
    X *= np.sign(np.sum(X, axis=0) + (np.sum(X, axis=0) == 0))[None, :]
    AX = op.matmat(X)
    lam = np.einsum("ij,ij->j", X.astype(np.float64), AX.astype(np.float64))  # Rayleigh quotients
    order = _select(lam, k, which)
    lam, X, AX = lam[order], X[:, order], AX[:, order]
    residuals = np.linalg.norm(AX.astype(np.float64) - X.astype(np.float64) * lam, axis=0)
    scale = max(float(np.max(np.abs(theta))), float(np.max(np.abs(lam))))
    converged = bool(np.all(residuals <= tol * scale)) if scale > 0 else bool(np.all(residuals == 0))
    converged = converged and len(lam) == k
    worst = float(np.max(residuals / scale)) if scale > 0 and len(lam) else 0.0
    msg = (f"{'converged' if converged else 'not converged'}: largest relative residual {worst:.2e} "
           f"(tol {tol:g}) after {it} block products of size {b} (maxiter {maxiter}, basis {ncv})")
    if len(lam) < k:
        msg += f"; only {len(lam)} of the {k} pairs asked for were formed (raise maxiter)"
    if b < k:
        msg += (f"; block_size {b} < k: an eigenvalue repeated more than {b} times among the wanted ones would "
                f"show at most {b} copies (block_size={k} resolves every multiplicity that matters here)")
    return EigshResult(lam, X, residuals, converged, op.matvecs - start, it, which, float(tol), seed, msg)

"""Orthonormalisation of tall distributed blocks without gathering them: shifted CholeskyQR3.

``Y`` (``m x l``, row-distributed like ``A``; or several such blocks side by side, as the
Krylov basis ``[Y_0 .. Y_q]``) is orthonormalised with three Cholesky QR sweeps over ``Y``
itself (never over ``A``): the first on ``Y.T Y + s I`` with the shift
``s = 11 (m l + l (l + 1)) eps ||Y||_2^2`` of Fukaya, Kannan, Nakatsukasa, Yamamoto,
Yanagisawa (SISC 2020), which makes it succeed for any condition number; the next two
(CholeskyQR2) restore orthogonality to ``O(eps)``. Each sweep is one reduction (``Z_i.T Z_i``
summed) on the backend.

A well-conditioned ``Y`` (the usual case for a power-iteration block) takes CholeskyQR2 alone:
two sweeps instead of three.

On a lazy backend (Dask) the intermediate factors are never stored: sweep ``j`` forms
``Z_i = ((Y_i M_1) M_2) .. M_{j-1}`` inside each block's task, the same products in the same
order as when each sweep is stored. Out of core only ``Y`` is held (a Krylov basis of
``(q + 1) l`` columns once, not four or five times over); when ``A`` fits in worker memory
``Q`` is stored too. Eager backends (numpy, MPI) store each sweep instead.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ..passes import K_DIST_CHAIN, K_DIST_CHAIN_GRAM

__all__ = ["orthonormalize", "apply_right"]


def apply_right(data, Y, M):
    """``Y @ M`` for distributed ``Y`` and small ``M`` (no read of ``A``; lazy on Dask)."""
    (Z,), _ = data.dist_pass(K_DIST_CHAIN, dist=(Y,), small=((M,),), dist_out=((M.shape[1], np.float64),))
    return Z


def _chain(data, blocks, Ms):
    (Z,), _ = data.dist_pass(K_DIST_CHAIN, dist=tuple(blocks), small=(tuple(Ms),),
                             dist_out=((Ms[-1].shape[1], np.float64),))
    return Z


def _gram(data, blocks, Ms=()):
    _, (G,) = data.dist_pass(K_DIST_CHAIN_GRAM, dist=tuple(blocks), small=(tuple(Ms),))
    return G


def orthonormalize(data, Y, *, gram=None, store=True):
    """Return ``(Q, R)`` with ``Y = Q R``, ``Q`` distributed and orthonormal to ``O(eps)``.

    ``gram``, when given, is ``Y.T Y`` already known without a sweep over ``Y`` (the low-rank
    methods get it from small factors: ``Y = A Z`` and ``W = A.T Y`` give ``Y.T Y = Z.T W``);
    the first sweep is then free. ``store=False`` leaves ``Q`` a lazy chain even when ``A``
    is held in worker memory (for a caller that uses it once).

    ``Y`` is one distributed block or a sequence of blocks with the same rows (taken side
    by side). When the first, unshifted Cholesky factor shows ``Y`` well enough conditioned
    for CholeskyQR2 (``80 kappa^2 sqrt(m l) eps <= 1``; Yamamoto, Nakatsukasa, Yanagisawa,
    Fukaya 2015 prove ``O(eps)`` orthogonality below ``8 kappa^2 sqrt(m l) eps = 1``), two
    sweeps are made; otherwise the shifted CholeskyQR3. On a lazy backend ``Q`` is stored
    once (:meth:`RowData.persist`) when ``A`` is held in worker memory, so its uses do not
    recompute the chain; out of core only ``Y`` is stored.
    """
    blocks = tuple(Y) if isinstance(Y, (list, tuple)) else (Y,)
    lazy = data.lazy  # the protocol says whether distributed outputs may stay deferred
    m = data.shape[0]
    eps = np.finfo(np.float64).eps
    G = _gram(data, blocks) if gram is None else (np.asarray(gram) + np.asarray(gram).T) / 2
    l = G.shape[0]
    sweeps = 2
    try:
        R = scipy.linalg.cholesky(G, lower=False)
        d = np.abs(np.diag(R))
        kappa = np.linalg.cond(R) if d.min() > 0 else np.inf
        if not 80 * kappa**2 * np.sqrt(m * l) * eps <= 1:
            raise np.linalg.LinAlgError("too ill-conditioned for CholeskyQR2")
    except np.linalg.LinAlgError:
        shift = 11 * (m * l + l * (l + 1)) * eps * max(np.linalg.norm(G, 2), np.finfo(float).tiny)
        R = scipy.linalg.cholesky(G + shift * np.eye(l), lower=False)
        sweeps = 3
    Ms = [scipy.linalg.solve_triangular(R, np.eye(l))]
    Z = None if lazy else _chain(data, blocks, Ms)
    for _ in range(sweeps - 1):
        G = _gram(data, blocks, Ms) if lazy else _gram(data, (Z,))
        try:
            R2 = scipy.linalg.cholesky(G, lower=False)
        except np.linalg.LinAlgError:
            R2 = scipy.linalg.cholesky(G + 11 * (m * l + l * (l + 1)) * eps * np.linalg.norm(G, 2) * np.eye(l))
        Ms.append(scipy.linalg.solve_triangular(R2, np.eye(l)))
        if not lazy:
            Z = apply_right(data, Z, Ms[-1])
        R = R2 @ R
    if not lazy:
        return Z, R
    Q = _chain(data, blocks, Ms)
    # stored once when A itself fits in worker memory; out of core, Y and Q together could
    # exceed a worker's limit, so Q stays a chain formed where it is used
    return (data.persist(Q) if data.cached and store else Q), R

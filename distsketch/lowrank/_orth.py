"""Orthonormalisation of tall distributed blocks without gathering them: shifted CholeskyQR3.

``Y`` (``m x l``, row-distributed like ``A``) is orthonormalised with three Cholesky QR
sweeps over ``Y`` itself (never over ``A``): the first on ``Y.T Y + s I`` with the
shift ``s = 11 (m l + l (l + 1)) eps ||Y||_2^2`` of Fukaya, Kannan, Nakatsukasa,
Yamamoto, Yanagisawa (SISC 2020), which makes it succeed for any condition number;
the next two (CholeskyQR2) restore orthogonality to ``O(eps)``. Each sweep is one
reduction (``Y_i.T Y_i`` summed) and one blockwise product, both on the backend.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["orthonormalize", "apply_right"]


def _k_gram(r0, dist):
    Y = dist[0]
    return (), (Y.T @ Y,)


def _k_right(r0, dist, M):
    return (dist[0] @ M,), ()


def apply_right(data, Y, M):
    """``Y @ M`` for distributed ``Y`` and small ``M`` (no read of ``A``)."""
    (Z,), _ = data.dist_pass(_k_right, dist=(Y,), small=(M,), dist_out=((M.shape[1], np.float64),))
    return Z


def _gram(data, Y):
    _, (G,) = data.dist_pass(_k_gram, dist=(Y,))
    return G


def orthonormalize(data, Y):
    """Return ``(Q, R)`` with ``Y = Q R``, ``Q`` distributed and orthonormal to ``O(eps)``."""
    m = data.shape[0]
    G = _gram(data, Y)
    l = G.shape[0]
    eps = np.finfo(np.float64).eps
    shift = 11 * (m * l + l * (l + 1)) * eps * max(np.linalg.norm(G, 2), np.finfo(float).tiny)
    R = scipy.linalg.cholesky(G + shift * np.eye(l), lower=False)
    Q = apply_right(data, Y, scipy.linalg.solve_triangular(R, np.eye(l)))
    for _ in range(2):
        G = _gram(data, Q)
        try:
            R2 = scipy.linalg.cholesky(G, lower=False)
        except np.linalg.LinAlgError:
            R2 = scipy.linalg.cholesky(G + 11 * (m * l + l * (l + 1)) * eps * np.linalg.norm(G, 2) * np.eye(l))
        Q = apply_right(data, Q, scipy.linalg.solve_triangular(R2, np.eye(l)))
        R = R2 @ R
    return Q, R

"""Preconditioners from a sketch: ``N = R^{-1}`` (QR of ``S A``) or ``N = V_r diag(1/s_r)``.

With ``S`` a subspace embedding of ``range(A)`` with distortion ``eps``, ``A N`` has
condition number at most ``(1 + eps) / (1 - eps)`` whatever ``cond(A)`` is (Rokhlin &
Tygert 2008; Avron, Maymounkov, Toledo 2010; Meng, Saunders, Mahoney 2014).

The QR is of the augmented sketch ``[S A, S b]`` (and ``damp * I`` below ``S A`` for
ridge problems): its last column gives ``Q.T S b`` for free, hence the
sketch-and-solve solution. When the 1-norm condition estimate of ``R`` (LAPACK
``trcon``) exceeds ``1 / (n eps)``, ``R`` is replaced by its SVD, truncated to
``sigma_i > sigma_1 n eps`` (the rank rule of gelsd), and ``N = V_r diag(1/s_r)``
spans the numerical row space: solutions stay minimum-norm.

``method="gram"`` (what the iterative solvers use) factors the Gram matrix of the sketch
instead, ``(S A).T (S A) + damp^2 I = R.T R`` (SYRK, ``d n^2`` flops, and a Cholesky of
``n^3 / 3``: about half the flops of the QR and all of them BLAS-3 at the GEMM rate).
Its ``R`` is the QR's up to a relative error ``~ eps cond(S A)^2``, so ``A R^{-1}``
is as well conditioned as with the QR's ``R`` while ``cond_2(S A) <= GRAM_COND_LIMIT``
(the power-iteration estimate of :func:`~distsketch.solve._cholqr.cond2_estimate`)
(``eps cond^2 <= 2e-4``); beyond that limit, or when the Cholesky fails, the QR is
computed as above. The warm start ``x = R^{-1} R^{-T} (S A).T S b`` carries the same
relative error, which the iteration removes; ``sketch_solve``, whose answer is that
``x``, always uses the QR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from .._memory import aligned_copy
from ..errors import NonFiniteError

__all__ = ["Precond", "build_precond"]


@dataclass(frozen=True)
class Precond:
    """Right preconditioner ``N`` (``n x r``) with ``x = N z``."""

    R: np.ndarray | None = None  # upper triangular, N = R^{-1}
    V: np.ndarray | None = None  # n x r, N = V diag(1/s)
    s: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return self.R.shape[0] if self.R is not None else self.V.shape[1]

    def apply(self, z):
        """``N @ z``."""
        if self.R is not None:  # R was checked finite when it was built
            return scipy.linalg.solve_triangular(self.R, z, check_finite=False)
        return self.V @ (z / self.s if z.ndim == 1 else z / self.s[:, None])

    def applyT(self, g):
        """``N.T @ g``."""
        if self.R is not None:
            return scipy.linalg.solve_triangular(self.R, g, trans="T", check_finite=False)
        y = self.V.T @ g
        return y / self.s if y.ndim == 1 else y / self.s[:, None]

    def right(self, Ai):
        """``A_i @ N`` for a row block (triangular solve, not an explicit inverse)."""
        Ai = np.asarray(Ai, dtype=np.float64)
        if self.R is not None:
            return scipy.linalg.solve_triangular(self.R, Ai.T, trans="T", check_finite=False).T
        return (Ai @ self.V) / self.s


@dataclass(frozen=True)
class SketchFactor:
    precond: Precond
    x_sketch: np.ndarray  # sketch-and-solve solution
    rho: float  # ||S (A x_sketch - b)|| (with the damping rows): estimates the residual norm
    cond: float  # condition estimate of A from the sketch
    rank: int
    anorm: float  # ||S A||_F: an unbiased estimate of ||A||_F


#: largest condition number of the sketch for which ``method="gram"`` keeps its Cholesky factor
GRAM_COND_LIMIT = 1e6


def _gram_factor(SA: np.ndarray, Sb: np.ndarray | None, damp: float) -> SketchFactor | None:
    """The ``method="gram"`` factor, or None when its Cholesky fails or the sketch is too
    ill-conditioned for it (the caller then runs the QR)."""
    from scipy.linalg import blas

    d, n = SA.shape
    SA = np.asarray(SA, dtype=np.float64)
    At = SA.T if SA.flags.c_contiguous else np.asfortranarray(SA).T  # F-ordered n x d: no copy for dsyrk
    G = blas.dsyrk(1.0, At, trans=0, lower=0)  # upper triangle of SA.T SA
    if damp > 0:
        G[np.arange(n), np.arange(n)] += damp * damp
    if not np.all(np.isfinite(np.diag(G))):
        return None
    R, info = lapack.dpotrf(G, lower=0, overwrite_a=True, clean=1)
    if info != 0:
        return None
    from ._cholqr import cond2_estimate

    # the gate is the 2-norm estimate: trcon's 1-norm one overstates cond_2 by up to n (100x seen on
    # cond 1e5 problems at n = 2,000), which would send most problems to the QR
    if not cond2_estimate(R) <= GRAM_COND_LIMIT:
        return None
    rcond, info = lapack.dtrcon(R, norm="1", uplo="U", diag="N")  # reported as cond, as the QR's
    if info != 0 or not rcond > 0:
        return None
    anorm = float(np.linalg.norm(SA))
    if Sb is None:
        return SketchFactor(Precond(R=np.ascontiguousarray(R)), np.zeros(n), float("nan"), float(1.0 / rcond), n,
                            anorm)
    Sb = np.asarray(Sb, dtype=np.float64).reshape(d)
    q = scipy.linalg.solve_triangular(R, SA.T @ Sb, trans="T", check_finite=False)  # Q.T S b
    x = scipy.linalg.solve_triangular(R, q, check_finite=False)
    rho = float(np.sqrt(max(float(Sb @ Sb) - float(q @ q), 0.0)))  # ||S (A x - b)||, to ~eps cond^2
    return SketchFactor(Precond(R=np.ascontiguousarray(R)), x, rho, float(1.0 / rcond), n, anorm)


def _aligned64(x: np.ndarray) -> np.ndarray:
    """``x`` (C-ordered) at a 64-byte boundary: a copy only when it is not there already."""
    x = np.asarray(x)
    if x.flags.c_contiguous and x.ctypes.data % 64 == 0:
        return x
    return aligned_copy(x)


def build_precond(SA: np.ndarray, Sb: np.ndarray | None, *, damp: float = 0.0, method: str = "qr") -> SketchFactor:
    """Factor the sketch; return the preconditioner, the sketch-and-solve solution and estimates.

    ``method="qr"`` (Householder QR of ``[S A, S b]``) or ``"gram"`` (Cholesky of the
    sketch's Gram matrix while ``cond(S A) <= GRAM_COND_LIMIT``, the QR otherwise; see
    the module notes).
    """
    d, n = SA.shape
    eps = np.finfo(np.float64).eps
    # the sketch at a 64-byte boundary whatever produced it (a pass, a checkpoint read back): BLAS
    # rounds by alignment, and a resumed solve must repeat the uninterrupted one bit for bit
    SA = _aligned64(SA)
    Sb = None if Sb is None else _aligned64(Sb)
    if method == "gram" and d >= n:
        fac = _gram_factor(SA, Sb, damp)
        if fac is not None:
            return fac
    # M = [S A, S b; damp I, 0] (zero rows up to n + 1), built once in Fortran order so that
    # LAPACK's geqrf factors it in place: no copies of the d x n sketch beyond this one
    rows = max(d + (n if damp > 0 else 0), n + 1)
    M = np.zeros((rows, n + 1), order="F")
    M[:d, :n] = SA
    if Sb is not None:
        M[:d, n] = Sb.reshape(d)
    if damp > 0:
        M[d + np.arange(n), np.arange(n)] = damp
    anorm = float(np.linalg.norm(SA))
    # the workspace query matters: with the minimal lwork geqrf runs unblocked (BLAS-2), ~100x slower
    lwork = int(lapack.dgeqrf(M, lwork=-1)[2][0])
    qr, _tau, _work, info = lapack.dgeqrf(M, lwork=max(lwork, n + 1), overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"geqrf failed (info={info})")
    Raug = np.triu(qr[: n + 1])
    R, q, rho = np.ascontiguousarray(Raug[:n, :n]), Raug[:n, n].copy(), abs(Raug[n, n])
    if not np.all(np.isfinite(R)):
        raise NonFiniteError("the sketch S A is not finite although A was (its entries overflow float64 when "
                             "summed); scale A down before solving")
    diag = np.abs(np.diag(R))
    if diag.min() == 0:
        rcond = 0.0
    else:
        rcond, info = lapack.dtrcon(R, norm="1", uplo="U", diag="N")
    if rcond > n * eps:
        P = Precond(R=R)
        x = scipy.linalg.solve_triangular(R, q)
        return SketchFactor(P, x, float(rho), float(1.0 / rcond), n, anorm)
    # numerically rank-deficient: SVD of R, keep sigma_i > sigma_1 n eps (gelsd's rule)
    U, s, Vt = scipy.linalg.svd(R, check_finite=False)
    keep = s > s[0] * n * eps
    r = int(keep.sum())
    P = Precond(V=Vt[:r].T.copy(), s=s[:r].copy())
    x = P.V @ ((U[:, :r].T @ q) / P.s)
    cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    return SketchFactor(P, x, float(rho), cond, r, anorm)

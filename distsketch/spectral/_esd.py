"""Eigenvalues of W^T W for weight matrices: symmetric rank-k update plus a symmetric
eigensolver in float64, batched over the slices of a layer; the smallest ones refined where
they matter; an SVD only where nothing cheaper settles it.

WeightWatcher takes the singular values of each matrix by a full SVD (``scipy.linalg.svd``,
LAPACK gesdd) and squares them. The eigenvalues of the Gram matrix of the smaller side are the
same numbers, and cost about a third as much (dsyrk is BLAS-3, the tridiagonal reduction works on
an M x M matrix). Their absolute error is about eps * lambda_max (gesdd's singular values have
absolute error eps * sigma_max), so small eigenvalues agree with WeightWatcher's to a relative
1e-16 * lambda_max / lambda. The metrics WeightWatcher derives are sums dominated by large
eigenvalues, fits above xmin, and counts against thresholds; only sv_min and the counts can feel
small errors. So:
  - the smallest eigenvalues are recomputed (at most 64: the smallest when it is below
    ``1e-10 * lambda_max`` - above that, sv_min from the Gram matrix is within about
    ``1e-16 * lambda_max / lambda_min <= 1e-6`` relative; all below ``1e-12 * lambda_max``; all up to one lying within the Gram
    error band of an absolute threshold WeightWatcher counts against: 1e-5, the power-law cut;
    1e-6, the weak-rank tolerance) by subspace inverse iteration on ``A^T A`` with Ritz values
    ``||A x||``: absolute error eps * sigma_max, like gesdd's (``eig_method="gram+inverse"``).
    That settles sv_min and the matrix rank (sigma > sigma_max * N * eps, far below what the Gram
    matrix resolves). The inverse comes, where it can, from what the two-stage eigensolver's
    full -> band reduction left behind (``G = Q B Q^T``: a banded Cholesky factor, O(M kd^2)),
    as a preconditioner of steps that take their residuals with ``A`` itself
    (:func:`_refine_band`: ~0.4 s for a 4096 x 4096 layer on one thread); else from an LU
    (square) or QR (tall) factor of ``A`` (:func:`_refine_smallest`: ~2.2 s, the LU alone 1.6 s);
  - gesdd runs, exactly as in WeightWatcher, when the factor is exactly singular, when more
    eigenvalues would need it, when a refined singular value lies within 100x of the rank
    tolerance or a refined eigenvalue within its own error band of a threshold.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg.blas import dgemm
from scipy.linalg.lapack import dgetrf

__all__ = ["singular_values_squared"]

_REFINE = 1e-10         # a smallest eigenvalue below this * lambda_max is refined (sv_min)
_RANK_FLOOR = 1e-12     # ... and with it all below this * lambda_max (the rank count)
_ABS_THRESHOLDS = (1e-5, 1e-6)
_BAND = 1e3 * np.finfo(np.float64).eps
_MAX_REFINE = 64        # more small eigenvalues than this: a full SVD is cheaper to trust
_OVERSAMPLE = 16
_MAX_ITER = 40
_MAX_BAND_ITER = 100
_ABS_TOL = 4 * np.finfo(np.float64).eps


def _refine_count(e):
    """How many of the smallest Gram eigenvalues (ascending ``e``) must be recomputed: the
    smallest when it is below ``_REFINE * lambda_max`` (sv_min); all below
    ``_RANK_FLOOR * lambda_max`` (the rank count); and all up to any that lies within the Gram
    error band of an absolute threshold WeightWatcher counts against. ``-1``: only an SVD will do
    (a zero matrix)."""
    if not len(e):
        return 0
    top = float(e[-1])
    if not top > 0:
        return -1
    k = 0
    if e[0] < _REFINE * top:
        k = max(1, int(np.count_nonzero(e < _RANK_FLOOR * top)))
    band = _BAND * top
    for t in _ABS_THRESHOLDS:
        near = np.flatnonzero(np.abs(e - t) <= band)
        if len(near):
            k = max(k, int(near[-1]) + 1)
    return k


def _near_threshold(r, top):
    """A refined value (absolute error ~ eps * sqrt(lambda * lambda_max)) still too close to
    call against a threshold."""
    return any(np.any(np.abs(r - t) <= 1e3 * np.finfo(np.float64).eps * np.sqrt(t * top)) for t in _ABS_THRESHOLDS)


def _block_size(e, k, m):
    """Block size for inverse iteration on the ``k`` smallest of ``m`` eigenvalues ``e``
    (ascending): past the k wanted, far enough that the next eigenvalue is at least twice the
    k-th (inverse iteration converges like lambda_k / lambda_(b+1) per step). None: no such
    block within ``4 * _OVERSAMPLE`` more (only an SVD, or too slow to be worth it)."""
    b = min(m, k + _OVERSAMPLE)
    while b < m and not e[b] >= 2 * e[k - 1]:
        b += _OVERSAMPLE
        if b > k + 4 * _OVERSAMPLE:
            return None
    return min(b, m)


def _converged(s, prev, k, top):
    return prev is not None and bool(np.all(np.abs(s[:k] - prev[:k]) <= 1e-12 * s[:k] + _ABS_TOL * np.sqrt(top)))


def _with_refined(e, s, k, N, top):
    """``e`` with its ``k`` smallest replaced by the squares of the refined singular values ``s``
    (ascending), or None when one lies too close to WeightWatcher's rank tolerance or a threshold
    to call (only an SVD settles it)."""
    tol = np.sqrt(top) * N * np.finfo(np.float64).eps
    if np.any((s[:k] > tol / 100) & (s[:k] < tol * 100)):
        return None
    out = e.copy()
    out[:k] = np.sort(s[:k] ** 2)
    if _near_threshold(out[:k], top):
        return None
    return np.sort(out)


def _tall(W):
    return np.ascontiguousarray(W if W.shape[0] >= W.shape[1] else W.T)


def _refine_smallest(W, e, N, k):
    """Replace the ``k`` smallest Gram eigenvalues ``e`` (ascending, of ``W``'s smaller side;
    see :func:`_refine_count`) by squared singular values accurate to ``eps * sigma_max``, as
    gesdd's are, without a full SVD: subspace inverse iteration on ``A^T A`` through an LU (square)
    or QR (tall) factor of ``A``, Ritz values from ``||A X||``. Returns the new array, or None
    when only a full SVD settles it (an exactly singular factor, too many small eigenvalues, no
    convergence, or a singular value near WeightWatcher's rank tolerance)."""
    A = _tall(W)
    n, m = A.shape
    top = float(e[-1])
    if k > _MAX_REFINE:
        return None
    b = _block_size(e, k, m)
    if b is None:
        return None
    # scipy's LAPACK/BLAS throughout: alternating with numpy's own OpenBLAS copy makes the two
    # libraries' spinning worker threads compete for the cores
    At = A.T  # Fortran-ordered view: no copies below
    if n == m:
        lu, piv, info = dgetrf(At)  # A^T = P L U; info > 0: an exactly zero pivot (no warning machinery:
        diag = np.abs(np.diag(lu)) if info == 0 else np.zeros(1)  # it is not thread-safe)

        def solve(X):  # (A^T A)^{-1} X = A^{-1} (A^{-T} X)
            return sla.lu_solve((lu, piv), sla.lu_solve((lu, piv), X, trans=0, check_finite=False),
                                trans=1, check_finite=False)
    else:
        R = sla.qr(A, mode="r", check_finite=False)[0][:m]
        diag = np.abs(np.diag(R))

        def solve(X):  # (R^T R)^{-1} X
            return sla.solve_triangular(R, sla.solve_triangular(R, X, trans=1, check_finite=False),
                                        check_finite=False)
    if not np.all(diag > 0):
        return None
    X = sla.qr(np.random.default_rng(0).standard_normal((m, b)), mode="economic", check_finite=False)[0]
    prev = None
    for _ in range(_MAX_ITER):
        X = sla.qr(solve(X), mode="economic", check_finite=False)[0]
        AX = dgemm(1.0, At, X, trans_a=1)  # A X
        s = sla.svd(AX, compute_uv=False, check_finite=False)[::-1]  # Ritz singular values, ascending
        if _converged(s, prev, k, top):
            break
        prev = s
    else:
        return None
    return _with_refined(e, s, k, N, top)


_SVD = object()  # _refine_band's answer when the values are refined but only an SVD can call them


def _refine_band(W, e, N, k, band):
    """:func:`_refine_smallest` without factoring ``A``: the same subspace inverse iteration on
    ``A^T A``, with the inverse taken from what the eigensolver's full -> band reduction left
    behind (``band``: ``G = Q B Q^T``, B banded; its Cholesky factor costs O(m kd^2)).

    ``M = Q B^{-1} Q^T`` is the inverse of the computed Gram matrix, ``A^T A + E`` with ``E`` of
    order eps * lambda_max: iterated alone it would converge to that matrix's eigenvectors, whose
    Ritz values carry the Gram matrix's error. So it only preconditions: each step takes the
    residual ``R = A^T (A X) - X Theta`` with ``A`` itself, and the Rayleigh-Ritz step over
    ``[X, M R]`` (Ritz values ``||A x||``, as in the factor route) has the fixed point of the true
    ``A^T A``; components outside the block shrink by ``(lambda_k + ||E||) / lambda_(b+1)`` a step.
    The start is the block's eigenvectors of B (inverse iteration on the band, ~ms a step), lifted
    by Q. Returns the new array; ``_SVD`` when a refined value lies too close to a rank tolerance
    or threshold to call (only an SVD settles it; a factor of ``A`` would not); or None where this
    route does not apply (the caller then factors ``A``): too small or too many eigenvalues, a Gram
    error not far below ``lambda_(b+1)``, B not numerically positive definite, no convergence."""
    m = min(W.shape)
    if k > _MAX_REFINE or band is None or band.n != m:
        return None
    top = float(e[-1])
    b = _block_size(e, k, m)
    if b is None or 2 * b > m or not _BAND * top <= 0.01 * e[b]:
        return None
    try:
        cb = sla.cholesky_banded(band.ab.T, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None

    def binv(X):
        return sla.cho_solve_banded((cb, True), X, check_finite=False)

    A = _tall(W)
    # B's b smallest eigenvectors, near enough for a start: subspace inverse iteration until
    # B^{-1} maps the first k columns (whose span converges first) into the block's span to 1e-8
    # (not the final accuracy: the steps with A below decide that)
    Z = sla.qr(np.random.default_rng(0).standard_normal((m, b)), mode="economic", check_finite=False)[0]
    for _ in range(_MAX_BAND_ITER):
        Y = binv(Z)
        Y /= np.linalg.norm(Y, axis=0)
        moved = np.linalg.norm(Y[:, :k] - Z @ (Z.T @ Y[:, :k]), axis=0)
        Z = sla.qr(Y, mode="economic", check_finite=False)[0]
        if np.all(moved <= 1e-8):
            break
    else:
        return None
    At = A.T
    X = band.apply_q(np.asfortranarray(Z), b"N")
    U, s, Vt = sla.svd(dgemm(1.0, At, X, trans_a=1), full_matrices=False, check_finite=False)
    X, AX = X @ Vt.T, U * s  # Ritz vectors of the lifted block, descending
    prev = s[::-1]
    for _ in range(_MAX_ITER):
        R = dgemm(1.0, At, AX) - X * s**2  # A^T (A X) - X Theta: with A itself
        T = band.apply_q(np.asfortranarray(binv(band.apply_q(np.asfortranarray(R), b"T"))), b"N")
        basis = sla.qr(np.hstack([X, T]), mode="economic", check_finite=False)[0]
        AQ = dgemm(1.0, At, basis, trans_a=1)
        _, s2, Vt = sla.svd(AQ, full_matrices=False, check_finite=False)
        V = Vt[-b:].T  # the b smallest Ritz pairs
        X, AX, s = basis @ V, AQ @ V, s2[-b:]
        sa = s[::-1]
        if _converged(sa, prev, k, top):
            break
        prev = sa
    else:
        return None
    r = _with_refined(e, sa, k, N, top)
    return _SVD if r is None else r


# ----------------------------------------------------------------------------- eigensolver
# numpy's eigvalsh (dsyevd) reduces the matrix to tridiagonal form with dsytrd, half of whose
# flops are matrix-vector products (memory-bound). LAPACK's two-stage reduction (dsytrd_2stage:
# full -> band by BLAS-3, band -> tridiagonal by bulge chasing) does the same for eigenvalues only
# at BLAS-3 speed. Neither numpy nor scipy wraps it, but the OpenBLAS numpy ships exports LAPACKE's
# dsyevd_2stage; it is called here through ctypes (which releases the GIL, like numpy's LAPACK
# calls, so layers analysed in parallel threads overlap). Measured (SkylakeX, 2 cores,
# loaded, one BLAS thread, median of 3): n = 4096 12.8 s -> 7.9 s; n = 2048 1.34 s -> 1.17 s;
# n = 1024 0.14 s -> 0.18 s: used from TWO_STAGE_MIN up. Both are backward stable: eigenvalues
# within a small multiple of eps * lambda_max of each other (measured <= 1e-15 relative to
# lambda_max).
TWO_STAGE_MIN = 2048
# The band width of the first stage. LAPACK's default (ilaenv2stage) is 32 for every size; the
# full -> band reduction then runs its symmetric updates (dsymm, dsyr2k) with 32 columns, at
# ~20 GFLOP/s on one thread here. 64 columns make the first stage ~25% faster for a bulge chase
# ~10% dearer: measured here (AMD EPYC, 2 cores, one BLAS thread, medians of 3 interleaved) the
# whole eigensolver went 6.00 s -> 5.27 s at n = 4096 (kd 96: 5.21 s, kd 16: 7.3 s) and
# 0.95 s -> 0.87 s at n = 2048. The three LAPACK routines the two-stage driver calls
# (dsytrd_sy2sb, dsytrd_sb2st, dsterf) are called directly, with this width, where the library
# exports them; else the driver runs with its own. Either way the reduction is orthogonal and
# backward stable: eigenvalues within a small multiple of eps * lambda_max.
BAND_WIDTH = 64
_two_stage = None  # the LAPACK functions found, False when unavailable


class _TwoStage:
    """LAPACK's two-stage symmetric eigensolver for eigenvalues only, from numpy's OpenBLAS:
    ``driver`` (LAPACKE dsyevd_2stage, LAPACK's own band width) and, when exported, the three
    Fortran routines behind it (``banded``), to choose the band width."""

    def __init__(self, driver, itype, banded, ormqr=None):
        self.driver, self.itype, self.banded, self.ormqr = driver, itype, banded, ormqr

    def eigvalsh(self, G, kd=None, keep=False):
        """Eigenvalues (ascending) of the C-contiguous symmetric float64 ``G`` (overwritten), or
        None when LAPACK reports no convergence. ``kd``: band width (None: LAPACK's default).
        ``keep``: return ``(eigenvalues, band)`` instead, ``band`` a :class:`_Band` (None where
        the banded route did not run or the library lacks dormqr); it keeps ``G`` alive."""
        n = G.shape[0]
        if kd is None or self.banded is None or not 1 <= kd < n - 1:
            w = np.empty(n)
            # a symmetric C-ordered matrix is its own column-major transpose: no copy
            info = self.driver(102, b"N", b"L", n, G.ctypes.data, n, w.ctypes.data)
            w = np.sort(w) if info == 0 else None
            return (w, None) if keep else w
        w, band = self._banded(G, kd, keep and self.ormqr is not None)  # (None, None) on failure
        return (w, band) if keep else w

    def _banded(self, G, kd, keep=False):
        import ctypes

        sy2sb, sb2st, sterf = self.banded
        I = self.itype  # noqa: E741
        ref = ctypes.byref
        n, one = G.shape[0], ctypes.c_size_t(1)  # hidden Fortran string lengths
        info = I(0)
        ldab = kd + 1
        ab = np.zeros((n, ldab))  # column-major (ldab, n)
        tau = np.empty(n)
        q1, q2 = np.zeros(1), np.zeros(1)

        def p(a):
            return ctypes.c_void_p(a.ctypes.data)

        # full -> band (BLAS-3): workspace query, then the call; G is its own column-major transpose
        sy2sb(b"L", ref(I(n)), ref(I(kd)), p(G), ref(I(n)), p(ab), ref(I(ldab)), p(tau), p(q1), ref(I(-1)),
              ref(info), one)
        if info.value != 0:
            return None, None
        work = np.empty(max(int(q1[0]), 1))
        sy2sb(b"L", ref(I(n)), ref(I(kd)), p(G), ref(I(n)), p(ab), ref(I(ldab)), p(tau), p(work),
              ref(I(len(work))), ref(info), one)
        if info.value != 0:
            return None, None
        band = _Band(self, G, tau, ab.copy(), kd) if keep else None  # sb2st overwrites ab
        d, e = np.empty(n), np.empty(n)
        # band -> tridiagonal (bulge chasing), no vectors
        sb2st(b"Y", b"N", b"L", ref(I(n)), ref(I(kd)), p(ab), ref(I(ldab)), p(d), p(e), p(q1), ref(I(-1)), p(q2),
              ref(I(-1)), ref(info), one, one, one)
        if info.value != 0:
            return None, None
        hous, work = np.empty(max(int(q1[0]), 1)), np.empty(max(int(q2[0]), 1))
        sb2st(b"Y", b"N", b"L", ref(I(n)), ref(I(kd)), p(ab), ref(I(ldab)), p(d), p(e), p(hous), ref(I(len(hous))),
              p(work), ref(I(len(work))), ref(info), one, one, one)
        if info.value != 0:
            return None, None
        sterf(ref(I(n)), p(d), p(e), ref(info))  # tridiagonal eigenvalues (root-free QR)
        return (np.sort(d), band) if info.value == 0 else (None, None)


class _Band:
    """What the full -> band reduction (dsytrd_sy2sb, lower) leaves behind: ``G = Q B Q^T``
    with B symmetric banded of width ``kd`` (its lower band, LAPACK's band storage, in
    ``ab.T``) and Q the product of the Householder vectors stored below the kd-th subdiagonal of
    ``G`` read column-major (``tau`` their scalars): the QR-factor format of the column-major
    block ``G(kd:, :n-kd)``, i.e. ``G[:n-kd, kd:]`` of the C-ordered array, applied by dormqr."""

    def __init__(self, ts, G, tau, ab, kd):
        self.ts, self.G, self.tau, self.ab, self.kd = ts, G, tau, ab, kd
        self.n = G.shape[0]

    def apply_q(self, X, trans):
        """``Q X`` (``trans=b"N"``) or ``Q^T X`` (``b"T"``) of the Fortran-ordered float64
        ``X`` (n x b), in place; returns ``X``."""
        import ctypes

        if not (X.flags.f_contiguous and X.dtype == np.float64 and X.shape[0] == self.n):
            raise ValueError(f"apply_q: expected a Fortran-ordered float64 array with {self.n} rows; "
                             f"got {X.dtype} {X.shape}")
        I, ref, one = self.ts.itype, ctypes.byref, ctypes.c_size_t(1)  # noqa: E741
        n, kd, b = self.n, self.kd, X.shape[1]
        m = n - kd
        if m <= 0 or b == 0:
            return X
        info, q = I(0), np.zeros(1)

        def call(work, lwork):  # the rows kd.. of X by the reflectors in G[kd:, :m] (column-major)
            self.ts.ormqr(b"L", trans, ref(I(m)), ref(I(b)), ref(I(m)), ctypes.c_void_p(self.G.ctypes.data + 8 * kd),
                          ref(I(n)), ctypes.c_void_p(self.tau.ctypes.data), ctypes.c_void_p(X.ctypes.data + 8 * kd),
                          ref(I(n)), ctypes.c_void_p(work.ctypes.data), ref(I(lwork)), ref(info), one, one)
            if info.value != 0:
                raise RuntimeError(f"dormqr failed (info {info.value})")

        call(q, -1)
        call(np.empty(max(int(q[0]), 1)), max(int(q[0]), 1))
        return X


def _find_two_stage():
    import ctypes
    import glob
    import os

    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, itype in (("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64),
                                      ("scipy_", "", ctypes.c_int32), ("", "", ctypes.c_int32)):
            f = getattr(lib, f"{prefix}LAPACKE_dsyevd_2stage{suffix}", None)
            if f is None:
                continue
            f.restype = itype
            f.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, itype, ctypes.c_void_p, itype, ctypes.c_void_p]
            # the Fortran routines: LAPACK's names, lower case with a trailing underscore, then the
            # ILP64 suffix ("64_") where the library has one
            fortran = [getattr(lib, f"{prefix}{name}_{suffix}", None)
                       for name in ("dsytrd_sy2sb", "dsytrd_sb2st", "dsterf")]
            banded = None
            if all(g is not None for g in fortran):
                for g in fortran:
                    g.restype = None
                banded = tuple(fortran)
            ormqr = getattr(lib, f"{prefix}dormqr_{suffix}", None)  # to apply the band reduction's Q
            if ormqr is not None:
                ormqr.restype = None
            return _TwoStage(f, itype, banded, ormqr)
    return False


def _eigvalsh_inplace(G, keep=False):
    """Eigenvalues (ascending) of the symmetric float64 matrix ``G``, which is overwritten:
    LAPACK's two-stage reduction when ``G`` is large and the library has it, else numpy's.
    None: the two-stage solver did not converge (``G`` is overwritten; the caller recomputes it).
    ``keep``: ``(eigenvalues, band)``, ``band`` the :class:`_Band` of the reduction or None."""
    global _two_stage
    n = G.shape[0]
    if n >= TWO_STAGE_MIN and G.flags.c_contiguous and G.dtype == np.float64:
        if _two_stage is None:
            _two_stage = _find_two_stage()
        if _two_stage:
            return _two_stage.eigvalsh(G, BAND_WIDTH, keep=keep)
    e = np.linalg.eigvalsh(G)
    return (e, None) if keep else e


def _gram_evals(W, keep=False):
    """``(eigenvalues, band)``: the eigenvalues (ascending) of the Gram matrix of the smaller side
    of one 2-D float64 matrix and, with ``keep``, the :class:`_Band` of its reduction (else None;
    see :func:`_eigvalsh_inplace`).

    numpy's matmul recognises ``A.T @ A`` and calls dsyrk; the eigensolver (numpy's dsyevd, or
    LAPACK's two-stage dsyevd from TWO_STAGE_MIN up) releases the GIL, so layers analysed in
    parallel threads overlap (scipy's wrappers hold it)."""
    A = np.ascontiguousarray(W)

    def gram():
        return A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T

    out = _eigvalsh_inplace(gram(), keep=keep)
    e, band = out if keep else (out, None)
    if e is None:
        return np.linalg.eigvalsh(gram()), None
    return e, band


def singular_values_squared(Wmats, method="auto"):
    """Squared singular values of each matrix in ``Wmats`` (list of 2-D arrays), each sorted
    ascending, and the method used (``"gram"``, ``"gram+inverse"`` or ``"svd"``).

    ``method``: ``"auto"`` (Gram eigenvalues, the smallest refined where they decide sv_min or
    a count, gesdd where refinement cannot settle it), ``"gram"`` (Gram eigenvalues only) or
    ``"svd"`` (WeightWatcher's own path).
    """
    mats = [np.asarray(W, dtype=np.float64) for W in Wmats]
    if method == "svd":
        return _svd(mats), "svd"
    shapes = {W.shape for W in mats}
    auto = method == "auto"
    batched = None
    if len(mats) > 1 and len(shapes) == 1:  # conv2d slices: one batched call
        stack = np.stack(mats)
        if stack.shape[1] < stack.shape[2]:
            stack = np.swapaxes(stack, 1, 2)
        batched = list(np.linalg.eigvalsh(np.matmul(np.swapaxes(stack, 1, 2), stack)))
    used, ev = "gram", []
    for i, W in enumerate(mats):
        # one at a time: a kept band reduction holds its Gram matrix until its refinement is done
        e, band = (batched[i], None) if batched is not None else _gram_evals(W, keep=auto)
        if auto:
            k = _refine_count(e)
            if k > 0:
                N = max(W.shape)
                r = _refine_band(W, e, N, k, band)
                band = None  # the Gram matrix is not needed past this point
                e = _refine_smallest(W, e, N, k) if r is None else (None if r is _SVD else r)
                used = "gram+inverse"
            if k < 0 or e is None:
                band = None
                return _svd(mats), "svd"
        band = None
        ev.append(e)
    return [np.clip(e, 0.0, None) for e in ev], used


def _svd(mats):
    return [np.sort(sla.svd(W, compute_uv=False)) ** 2 for W in mats]

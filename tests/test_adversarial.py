"""Adversarial inputs, as a hostile but realistic user would try them (issue 11, items 3, 4, 6, 8).

One table: each row is an operation on an input and either the error it must raise (type and
message) or a check of the answer against LAPACK (numpy/scipy). The rule the table enforces:
no row returns a wrong answer with a success status (``converged`` for ``lstsq``; for the
low-rank drivers, which have no status, the answer itself is checked).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse

import distsketch as ds
from distsketch.errors import (DistsketchError, GramFactorError, InputTypeError, NonFiniteError, ParameterError,
                               ShapeError)

RNG = np.random.default_rng(11)
A = RNG.standard_normal((600, 12))  # a well-conditioned tall matrix
B = RNG.standard_normal(600)
C = RNG.standard_normal(12)
AW = RNG.standard_normal((15, 200))  # wide
BW = RNG.standard_normal(15)
# coherent: only the first 12 rows are nonzero, so uniform row sampling of 48 of 600 rows misses them
ACOH = np.zeros((600, 12))
ACOH[:12] = RNG.standard_normal((12, 12))
# a few heavy rows (leverage ~1): uniform sampling sees a different matrix than A
AHEAVY = RNG.standard_normal((2000, 10))
AHEAVY[:3] *= 1e8
BHEAVY = RNG.standard_normal(2000)
ADUP = np.hstack([A[:, :6], A[:, :6]])  # duplicated columns: rank 6 of 12
SPSD = RNG.standard_normal((80, 5))
PSD5 = SPSD @ SPSD.T  # 80 x 80 PSD of rank 5
ADEC = RNG.standard_normal((300, 25)) * np.logspace(0, -3, 25)  # decaying spectrum for svd rows
# wide and cond 1e14 (~ 1/(m eps)): the sketch keeps rank 39 of 40, so A x = b cannot be met to rounding
AW14 = (np.linalg.qr(RNG.standard_normal((40, 40)))[0] * np.logspace(0, -14, 40)) @ \
    np.linalg.qr(RNG.standard_normal((1500, 40)))[0].T
BW14 = AW14 @ RNG.standard_normal(1500)


def gelsd(A_, b_, cond=None):
    return scipy.linalg.lstsq(A_, b_, lapack_driver="gelsd", cond=cond)[0]


def rel(x, y):
    """Relative error in units of max|y| (no over/underflow in the norms for scaled data)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    s = np.max(np.abs(y)) or 1.0
    return float(np.linalg.norm(x / s - y / s) / max(np.linalg.norm(y / s), 1e-300))


def sv(A_):
    return np.linalg.svd(A_, compute_uv=False)


class Raises:
    def __init__(self, exc, match):
        self.exc, self.match = exc, match


# ---- checks: each receives (result, warnings recorded) and asserts --------------------------
def solves(xref, tol=1e-10, converged=True):
    """A verified lstsq result equal to the LAPACK solution (and, when it is one, converged)."""
    def check(res, w):
        assert res.converged is converged, (res.istop, res.message)
        assert res.verified
        assert rel(res.x, xref) <= tol, rel(res.x, xref)
    return check


def not_converged(istop, wrong_ref=None):
    """Not reported as converged; ``istop`` as given (the answer may be wrong: it is not claimed)."""
    def check(res, w):
        assert res.istop == istop and not res.converged, (res.istop, res.message)
        if istop == 9:
            assert "did not embed A" in res.message
            assert any(issubclass(x.category, ds.ConvergenceWarning) for x in w)
        if wrong_ref is not None:  # it is indeed wrong: the status is what saves the user
            assert rel(res.x, wrong_ref) > 1e-6
    return check


def honest_minnorm(A_, b_):
    """Converged only if ||b - A x|| is at LAPACK's rounding level; otherwise istop 9 with a warning."""
    def check(res, w):
        x_l = np.linalg.lstsq(A_, b_, rcond=1e-16)[0]
        lapack_level = np.linalg.norm(b_ - A_ @ x_l) / (np.linalg.norm(A_, 2) * np.linalg.norm(x_l))
        ours = np.linalg.norm(b_ - A_ @ res.x) / (np.linalg.norm(A_, 2) * np.linalg.norm(res.x))
        if res.converged:
            assert ours <= 100 * max(lapack_level, np.finfo(float).eps), (ours, lapack_level)
        else:
            assert res.istop == 9 and any(issubclass(x.category, ds.ConvergenceWarning) for x in w)
            assert "||A x - b||" in str([str(x.message) for x in w])
    return check


def sketch_solve_bound(A_, b_):
    """istop 8: not verified, not converged; the residual bound holds; normr is the sketched estimate."""
    def check(res, w):
        assert res.istop == 8 and not res.converged and not res.verified and "Not verified" in res.message
        best = np.linalg.norm(b_ - A_ @ gelsd(A_, b_))
        eps = res.eps_sketch
        assert np.linalg.norm(b_ - A_ @ res.x) <= (1 + eps) / (1 - eps) * best
    return check


def svals(ref, k, tol=1e-10):
    def check(res, w):
        assert rel(res.s, ref[:k]) <= tol, (res.s, ref[:k])
        U = np.asarray(res.U)
        assert np.linalg.norm(U.T @ U - np.eye(U.shape[1])) <= 1e-10
    return check


def zero_svd(k):
    """A = 0: s = 0 exactly, U and Vt orthonormal (any orthonormal pair is an SVD of 0)."""
    def check(res, w):
        assert res.s.shape == (k,) and np.all(res.s == 0) and res.error_estimate == 0
        U, Vt = np.asarray(res.U), np.asarray(res.Vt)
        assert np.allclose(U.T @ U, np.eye(k)) and np.allclose(Vt @ Vt.T, np.eye(k))
    return check


def lstsq(*args, **kw):
    return lambda: ds.lstsq(*args, **{"seed": 0, **kw})


def svd(*args, **kw):
    return lambda: ds.svd(*args, **{"seed": 0, **kw})


NAN_X0 = np.zeros(12)
NAN_X0[3] = np.nan
INF_X0 = np.zeros(12)
INF_X0[0] = np.inf
A_NAN = A.copy()
A_NAN[417, 5] = np.nan
MASKED = np.ma.masked_array(A, mask=np.zeros(A.shape, bool))
MASKED.mask[7, 2] = True

CASES = [
    # ---- item 3: certificates never checked --------------------------------------------------
    # sketch_size < n: main ran, istop 5 "converged" with 62% error; now refused before any read
    pytest.param(lstsq(A, B, method="cholqr", sketch_size=10), Raises(ParameterError, r"sketch_size=10 is smaller "
                 r"than n=12.*sketch_size >= 12"), id="sketch_size<n-cholqr"),
    pytest.param(lstsq(A, B, method="sketch_precondition", sketch_size=11), Raises(ParameterError, r"smaller than "
                 r"n=12"), id="sketch_size<n-lsqr"),
    # sketch_solve with d < n: main returned istop 4 ("small enough") with normr 0 and x 15x off
    pytest.param(lstsq(A, B, method="sketch_solve", sketch_size=5), Raises(ParameterError, r"smaller than n=12"),
                 id="sketch_size<n-sketch_solve"),
    # wide problems sketch A.T: the sketch must have at least m rows
    pytest.param(lstsq(AW, BW, sketch_size=10), Raises(ParameterError, r"sketch_size=10 is smaller than m=15"),
                 id="sketch_size<m-wide"),
    # a float sketch size is a type error in disguise
    pytest.param(lstsq(A, B, sketch_size=40.5), Raises(ParameterError, r"sketch_size must be an integer; got 40.5"),
                 id="sketch_size-float"),
    # uniform sampling of coherent A: main returned x = 0 (100% error) as istop 5, converged
    pytest.param(lstsq(ACOH, B, method="cholqr", sketch_kind="uniform"), not_converged(9, gelsd(ACOH, B)),
                 id="uniform-coherent-cholqr"),
    # auto picks normal_cholqr here, which reads no sketch (the Cholesky of A.T A): right and certified
    pytest.param(lstsq(ACOH, B, sketch_kind="uniform"), solves(gelsd(ACOH, B)), id="uniform-coherent-auto"),
    pytest.param(lstsq(ACOH, B, method="sketch_precondition", sketch_kind="uniform"),
                 not_converged(9, gelsd(ACOH, B)), id="uniform-coherent-lsqr"),
    # three rows 1e8 times heavier, sampled uniformly: main said converged with 1e-5..1e-3 error
    pytest.param(lstsq(AHEAVY, BHEAVY, method="cholqr", sketch_kind="uniform"),
                 not_converged(9, gelsd(AHEAVY, BHEAVY)), id="uniform-heavy-rows"),
    # the same with the saddle-point term: main said converged with 4-10% error
    pytest.param(lstsq(AHEAVY, BHEAVY, c=np.ones(10), method="cholqr", sketch_kind="uniform", seed=1),
                 not_converged(9), id="uniform-heavy-rows-c"),
    # control: the same data with a mixing sketch is solved and certified
    pytest.param(lstsq(AHEAVY, BHEAVY, method="cholqr"), solves(gelsd(AHEAVY, BHEAVY), 1e-8), id="heavy-rows-sparse"),
    # control: uniform sampling of incoherent (Gaussian) data is fine and certified
    pytest.param(lstsq(A, B, sketch_kind="uniform"), solves(gelsd(A, B)), id="uniform-incoherent"),
    # wide, cond 1e14: main said istop 4 "small enough for this machine" with ||b - A x|| 1e7 x rounding
    pytest.param(lstsq(AW14, BW14), honest_minnorm(AW14, BW14), id="wide-cond1e14"),
    pytest.param(lstsq(AW14, BW14, atol=0.0, btol=0.0), honest_minnorm(AW14, BW14), id="wide-cond1e14-tol0"),
    # sketch_solve tests nothing: main said istop 2 "good enough, given atol", converged
    pytest.param(lstsq(A, B, method="sketch_solve"), sketch_solve_bound(A, B), id="sketch_solve-unverified"),
    # ---- item 4: small and odd shapes ------------------------------------------------------------
    # n = 1, 2, 3: main raised "nnz=8 nonzeros per column do not fit in d=2 rows" (lstsq takes no nnz)
    *[pytest.param(lstsq(A[:, :k], B, method=m), solves(gelsd(A[:, :k], B)), id=f"n={k}-{m}")
      for k in (1, 2, 3) for m in ("auto", "cholqr", "sketch_precondition")],
    pytest.param(lstsq(A[:, :1], B, method="sketch_solve"), sketch_solve_bound(A[:, :1], B), id="n=1-sketch_solve"),
    # one row, one column: the minimum-norm solution of a 1 x 1 system
    pytest.param(lstsq(np.array([[4.0]]), np.array([2.0])), solves(np.array([0.5])), id="1x1"),
    # a single row: minimum-norm solution of one equation, x = a b / ||a||^2
    pytest.param(lstsq(A[:1], B[:1]), solves(np.linalg.pinv(A[:1]) @ B[:1]), id="1-row"),
    # m = n square
    pytest.param(lstsq(A[:12], B[:12]), solves(np.linalg.solve(A[:12], B[:12]), 1e-8), id="square"),
    # sketch_solve with c: main silently ignored c (x of the plain problem)
    pytest.param(lstsq(A, B, c=C, method="sketch_solve"), Raises(ParameterError, r"sketch_solve does not solve the "
                 r"saddle-point problem"), id="sketch_solve-c"),
    # sketch_solve of a wide A: main returned x of length m (15) instead of n (200)
    pytest.param(lstsq(AW, BW, method="sketch_solve"), Raises(ParameterError, r"sketch_solve solves m >= n problems; "
                 r"A is 15 x 200"), id="sketch_solve-wide"),
    # zero-row Dask chunks: main raised "need at least one array to concatenate"
    pytest.param(lstsq(da.from_array(A, chunks=((200, 0, 300, 0, 100), 12)), B), solves(gelsd(A, B)),
                 id="dask-zero-row-chunks"),
    pytest.param(lstsq(da.from_array(A, chunks=((200, 0, 400), 12)), da.from_array(B, chunks=((200, 0, 400),)),
                       method="sketch_precondition"), solves(gelsd(A, B)), id="dask-zero-row-chunks-lazy-b"),
    pytest.param(svd(da.from_array(ADEC, chunks=((100, 0, 200), 25)), 3, method="single_pass"),
                 svals(sv(ADEC), 3, 0.1), id="svd-dask-zero-row-chunks"),
    # the minimum-norm (wide) path with tiny chunks
    pytest.param(lstsq(da.from_array(AW, chunks=(15, 37)), BW), solves(gelsd(AW, BW)), id="wide-dask-tiny-chunks"),
    # ---- item 8: errors outside the hierarchy, extreme scales --------------------------------------
    # NaN in x0: main raised a raw ZeroDivisionError (LSQR) or scipy's ValueError (cholqr)
    pytest.param(lstsq(A, B, x0=NAN_X0, method="sketch_precondition"), Raises(NonFiniteError, r"x0 holds 1 NaN or "
                 r"Inf value\(s\) \(first at index 3\)"), id="x0-nan"),
    pytest.param(lstsq(A, B, x0=INF_X0, method="cholqr"), Raises(NonFiniteError, r"x0 holds 1 NaN or Inf"),
                 id="x0-inf"),
    # complex options: main dropped the imaginary part with a ComplexWarning
    pytest.param(lstsq(A, B, x0=np.ones(12) + 1j), Raises(InputTypeError, r"x0 must hold real numbers; got dtype "
                 r"complex128"), id="x0-complex"),
    pytest.param(lstsq(A, B, c=C + 1j), Raises(InputTypeError, r"c must hold real numbers"), id="c-complex"),
    pytest.param(lstsq(A, B, x0=[[1.0, 2.0], [3.0]]), Raises(ShapeError, r"x0 must be a vector of numbers; got a "
                 r"ragged sequence"), id="x0-ragged"),
    # zero matrix: main raised LinAlgError "1-th leading minor ... not positive definite"
    *[pytest.param(svd(np.zeros((90, 14)), 3, method=m), zero_svd(3), id=f"svd-zero-{m}")
      for m in ("auto", "rsvd", "block_krylov", "single_pass")],
    pytest.param(svd(np.zeros((14, 90)), 3), zero_svd(3), id="svd-zero-wide"),
    pytest.param(svd(np.zeros((90, 14)), tol=0.1), zero_svd(1), id="svd-zero-tol"),
    pytest.param(lambda: ds.nystrom(np.zeros((50, 50)), 4, seed=0),
                 lambda res, w: (np.testing.assert_array_equal(res.lam, 0),
                                 np.testing.assert_allclose(res.U.T @ res.U, np.eye(4))), id="nystrom-zero"),
    pytest.param(lambda: ds.qb(np.zeros((90, 14)), rank=4, seed=0),
                 lambda res, w: (np.testing.assert_array_equal(res.B, 0),
                                 np.testing.assert_equal(res.error_estimate, 0)),
                 id="qb-zero"),
    # lstsq of A = 0: x = 0 is the minimum-norm solution and A.T r = 0 holds exactly
    pytest.param(lstsq(np.zeros((100, 4)), np.ones(100)), solves(np.zeros(4)), id="lstsq-zero-A"),
    # huge and tiny scales: main raised "SVD did not converge" (1e200) for svd
    # (the exact power-of-two scaling gives the unscaled run's answer, within the randomized SVD's own error)
    *[pytest.param(svd(ADEC * f, 4, method=m), lambda res, w, f=f, m=m: (
        svals(sv(ADEC) * f, 4, 0.05 if m == "single_pass" else 1e-6)(res, w),
        np.testing.assert_allclose(res.s / f, ds.svd(ADEC, 4, method=m, seed=0).s, rtol=1e-13)),
        id=f"svd-scale{f:g}-{m}") for f in (1e200, 1e-300) for m in ("rsvd", "block_krylov", "single_pass")],
    # entries near the float64 limit whose singular values are beyond it: an error, not s = inf
    pytest.param(svd(A * 1e307, 3), Raises(NonFiniteError, r"the singular values of A \(up to .* x 2\^1020\) exceed "
                 r"the float64 range"), id="svd-s-beyond-float64"),
    pytest.param(svd(ADEC * 1e250, tol=0.2), lambda res, w: (
        np.testing.assert_allclose(res.s / 1e250, sv(ADEC)[:res.rank], rtol=1e-10)), id="svd-tol-scale1e250"),
    # rank-5 PSD scaled: the rank-5 Nystrom approximation is exact, so lam are its eigenvalues
    pytest.param(lambda: ds.nystrom(PSD5 * 1e200, 5, seed=0), lambda res, w: np.testing.assert_allclose(
        res.lam / 1e200, np.linalg.eigvalsh(PSD5)[::-1][:5], rtol=1e-8), id="nystrom-scale1e200"),
    # lstsq of A * 1e-300: main gave ~600 overflow warnings then istop 7 with x = NaN
    *[pytest.param(lstsq(A * 1e-300, B, method=m), solves(gelsd(A, B) * 1e300), id=f"lstsq-A*1e-300-{m}")
      for m in ("auto", "cholqr", "sketch_precondition")],
    pytest.param(lstsq(A * 1e300, B), solves(gelsd(A, B) * 1e-300), id="lstsq-A*1e300"),
    # b * 1e300: main gave istop 7 with x = NaN
    pytest.param(lstsq(A, B * 1e300), solves(gelsd(A, B) * 1e300), id="lstsq-b*1e300"),
    # b * 1e-300 is not b = 0
    pytest.param(lstsq(A, B * 1e-300), solves(gelsd(A, B) * 1e-300), id="lstsq-b*1e-300"),
    pytest.param(lstsq(AW * 1e-300, BW), solves(gelsd(AW, BW) * 1e300), id="lstsq-wide-A*1e-300"),
    # ridge and c-term survive the internal scaling (damp' = sA damp, c' = sA sb c)
    pytest.param(lstsq(A * 1e-200, B, damp=3e-200), solves(np.linalg.solve(A.T @ A + 9 * np.eye(12), A.T @ B)
                                                           * 1e200), id="ridge-A*1e-200"),
    pytest.param(lstsq(A * 1e-200, B, c=C * 1e-200), solves(np.linalg.solve(A.T @ A, A.T @ B - C) * 1e200),
                 id="c-term-A*1e-200"),
    # inputs: masked, complex, ragged, sparse, strings (main: numpy's own messages or a silent unmask)
    pytest.param(lstsq(MASKED, B), Raises(InputTypeError, r"A is a masked array with 1 masked entry; .*A.filled"),
                 id="masked-A"),
    pytest.param(lstsq(A, np.ma.masked_invalid(np.where(B > 2, np.nan, B))), Raises(InputTypeError, r"b is a masked "
                 r"array with \d+ masked entries"), id="masked-b"),
    pytest.param(lstsq(np.ma.masked_array(A), B), solves(gelsd(A, B)), id="masked-nothing-masked"),
    pytest.param(lstsq(A + 1j * A, B), Raises(InputTypeError, r"A has dtype complex128; .*complex data is not "
                 r"supported"), id="complex-A"),
    pytest.param(lstsq(A, B + 0j), Raises(InputTypeError, r"b has dtype complex128"), id="complex-b"),
    pytest.param(svd(A + 1j * A, 2), Raises(InputTypeError, r"A has dtype complex128"), id="complex-svd"),
    pytest.param(lstsq([[1.0, 2.0], [3.0]], [1.0, 2.0]), Raises(ShapeError, r"A is a ragged sequence"), id="ragged-A"),
    pytest.param(lstsq(scipy.sparse.csr_matrix(A), B), Raises(InputTypeError, r"scipy sparse matrix \(csr_matrix\)"),
                 id="scipy-sparse-A"),
    pytest.param(lstsq(np.array([["1", "2"], ["3", "4"]]), [1.0, 2.0]), Raises(InputTypeError, r"A has dtype <U1"),
                 id="string-A"),
    pytest.param(lstsq(None, B), Raises(InputTypeError, r"A must be a numpy array.*got NoneType"), id="None-A"),
    # wrong dtypes that are fine: ints, bools, float16 (computed in float64/float32)
    pytest.param(lstsq((A * 100).astype(np.int64), B), solves(gelsd((A * 100).astype(np.int64).astype(float), B)),
                 id="int-A"),
    pytest.param(lstsq(A > 0, B), solves(gelsd((A > 0).astype(float), B)), id="bool-A"),
    pytest.param(lstsq(A.astype(np.float32), B.astype(np.float32)), lambda res, w: (
        np.testing.assert_equal(res.x.dtype, np.float32), solves(gelsd(A, B), 1e-5)(res, w)), id="float32"),
    # ---- variants: b all zeros, duplicated columns, tolerances 0, maxiter 0, bad options -----------------
    # b = 0: x = 0 exactly (istop 0), no pass
    pytest.param(lstsq(A, np.zeros(600)), lambda res, w: (np.testing.assert_equal(res.istop, 0),
                                                          np.testing.assert_array_equal(res.x, 0)), id="b-zero"),
    # b = 0 with c: the minimum-norm solution of A.T y = c is not zero
    pytest.param(lstsq(A, np.zeros(600), c=C), solves(np.linalg.solve(A.T @ A, -C)), id="b-zero-with-c"),
    # duplicated columns: rank 6 of 12, the minimum-norm solution as gelsd (with a warning)
    pytest.param(lstsq(ADUP, B), lambda res, w: (solves(gelsd(ADUP, B, 1e-10), 1e-8)(res, w), np.testing.assert_equal(
        res.rank, 6)), id="duplicated-columns"),
    # tolerances 0: stops at the rounding level, checked on the true residual (istop 5), and is right
    *[pytest.param(lstsq(A, B, atol=0.0, btol=0.0, method=m), lambda res, w: (
        np.testing.assert_equal(res.istop, 5), solves(gelsd(A, B))(res, w)), id=f"tol0-{m}")
      for m in ("cholqr", "sketch_precondition")],
    # maxiter 0: the iteration limit, not converged, with a warning
    pytest.param(lstsq(A, B, method="sketch_precondition", maxiter=0), lambda res, w: (
        np.testing.assert_equal((res.istop, res.converged), (7, False)),
        np.testing.assert_(any(issubclass(x.category, ds.ConvergenceWarning) for x in w))), id="maxiter0-lsqr"),
    pytest.param(lstsq(A, B, method="sketch_precondition", maxiter=2.5), Raises(ParameterError, r"maxiter must be a "
                 r"non-negative integer; got 2.5"), id="maxiter-float"),
    pytest.param(lstsq(A, B, atol=-1e-3), Raises(ParameterError, r"atol must be a finite number >= 0"),
                 id="atol-negative"),
    pytest.param(lstsq(A, B, btol=float("nan")), Raises(ParameterError, r"btol must be a finite number >= 0"),
                 id="btol-nan"),
    # damp 1e300: main raised a raw OverflowError (damp^2)
    pytest.param(lstsq(A, B, damp=1e300), Raises(ParameterError, r"damp=1e\+300 is so large relative to A .*damp\^2 "
                 r"overflows float64"), id="damp-1e300"),
    # but a large damp on data of the same scale is fine (scaled together)
    pytest.param(lstsq(A * 1e200, B, damp=3e200), solves(np.linalg.solve(A.T @ A + 9 * np.eye(12), A.T @ B) * 1e-200),
                 id="ridge-A*1e200-damp3e200"),
    # a rank-1 tall matrix (all columns equal): the minimum-norm solution as pinv
    pytest.param(lstsq(np.ones((50, 3)), np.arange(50.0)), solves(np.linalg.pinv(np.ones((50, 3))) @ np.arange(50.0),
                                                                   1e-10), id="rank1-tall"),
    # 0 x = 1: x = 0 is the least-squares solution, and A.T r = 0 holds exactly
    pytest.param(lstsq([[0.0]], [1.0]), solves(np.zeros(1)), id="1x1-zero"),
    # float32 data at 1e30 (scaled internally), answer in float32
    pytest.param(lstsq((A * 1e30).astype(np.float32), B), lambda res, w: (
        np.testing.assert_equal(res.x.dtype, np.float32), solves(gelsd(A, B) * 1e-30, 1e-5)(res, w)),
        id="float32-A*1e30"),
    pytest.param(lstsq(A, B, method="qr"), Raises(ParameterError, r"unknown method 'qr'"), id="method-unknown"),
    pytest.param(lstsq(A, B[:-1]), Raises(ShapeError, r"b must have m=600 entries.*got shape \(599,\)"),
                 id="b-wrong-length"),
    pytest.param(lstsq(A, np.ones((600, 2))), Raises(ShapeError, r"b must be a vector"), id="b-two-columns"),
    pytest.param(lstsq(np.zeros((0, 3)), np.zeros(0)), Raises(ShapeError, r"A is empty"), id="A-empty"),
    pytest.param(lstsq(A_NAN, B), Raises(NonFiniteError, r"A holds 1 non-finite value.*row 417, column 5"),
                 id="A-nan"),
    pytest.param(lstsq(A, np.where(np.arange(600) == 9, np.inf, B)), Raises(NonFiniteError, r"b holds 1 non-finite"),
                 id="b-inf"),
    pytest.param(lstsq(AW, BW, c=np.ones(200)), Raises(ParameterError, r"c \(the saddle-point problem\) needs m >= n"),
                 id="wide-with-c"),
    pytest.param(lstsq(A[:20], B[:20], sketch_kind="uniform", sketch_size=30), Raises(ParameterError, r"d must be "
                 r"<= m; got d=30, m=20"), id="uniform-sketch>m"),
    # m barely above n with sampling sketches: the default d is clamped to m
    pytest.param(lstsq(A[:20], B[:20], sketch_kind="srct"), solves(gelsd(A[:20], B[:20]), 1e-8), id="m=n+8-srct"),
    # svd options and shapes
    pytest.param(svd(A, 13), Raises(ParameterError, r"rank must be an integer in \[1, min\(m, n\)=12\]"),
                 id="svd-rank>n"),
    pytest.param(svd(A, tol=0.0), Raises(ParameterError, r"tol is a relative Frobenius error"), id="svd-tol0"),
    pytest.param(svd(A[:, :1], 1), svals(sv(A[:, :1]), 1), id="svd-one-column"),
    pytest.param(svd(A[:1], 1), lambda res, w: np.testing.assert_allclose(res.s, sv(A[:1]), rtol=1e-12),
                 id="svd-one-row"),
    pytest.param(svd(ADUP, 6, method="rsvd", n_power_iter=2), svals(sv(ADUP), 6, 1e-8), id="svd-duplicated-columns"),
    # huge oversampling: l is capped at min(m, n), so the answer is exact
    pytest.param(svd(ADEC, 5, n_oversamples=1000), svals(sv(ADEC), 5), id="svd-oversample>n"),
    pytest.param(lambda: ds.nystrom(A[:12] @ A[:12].T + np.triu(np.ones((12, 12)), 1), 2), Raises(
        ParameterError, r"nystrom needs a symmetric positive semidefinite matrix"), id="nystrom-nonsymmetric"),
]


@pytest.mark.parametrize("op, expect", CASES)
def test_adversarial(op, expect):
    if isinstance(expect, Raises):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(expect.exc, match=expect.match) as info:
                op()
        assert isinstance(info.value, DistsketchError)  # every error of the table is in the hierarchy
        return
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = op()
    expect(res, w)


def test_gram_factor_error_is_in_the_hierarchy():
    """GramFactorError (a failed Cholesky of the preconditioned Gram) is a DistsketchError and a LinAlgError."""
    from distsketch.backends import as_rowdata
    from distsketch.solve._cholqr import gram_factor
    from distsketch.solve._precond import Precond

    Az = A.copy()
    Az[:, 4] = 0.0  # N = I and a zero column: the Gram matrix is singular
    with pytest.raises(GramFactorError, match=r"Gram matrix of A N .* is not positive definite.*sketch_size") as info:
        gram_factor(as_rowdata(Az), None, Precond(R=np.eye(12)), 0.0)
    assert isinstance(info.value, DistsketchError) and isinstance(info.value, np.linalg.LinAlgError)


def test_block_krylov_basis_never_exceeds_min_m_n(monkeypatch):
    """n_power_iter=200 on a 2000 x 30 matrix: main grew a 2010-column basis (2.7 GB at 20000 x 30)."""
    from distsketch.lowrank import _svd

    widths = []
    orig, orig_ritz = _svd.orthonormalize, _svd._ritz_in_basis

    def width(Y):  # one block, or the Krylov basis as a list of blocks side by side
        return sum(y.shape[1] for y in Y) if isinstance(Y, (list, tuple)) else Y.shape[1]

    def spy(data, Y, **kw):
        widths.append(width(Y))
        return orig(data, Y, **kw)

    def spy_ritz(data, blocks, *args):  # the basis is used as it is when well conditioned
        widths.append(width(blocks))
        return orig_ritz(data, blocks, *args)

    monkeypatch.setattr(_svd, "orthonormalize", spy)
    monkeypatch.setattr(_svd, "_ritz_in_basis", spy_ritz)
    A_ = RNG.standard_normal((2000, 30))
    res = ds.svd(A_, 5, method="block_krylov", n_power_iter=200, seed=0)
    assert widths and max(widths) <= 30, widths
    # l = 15 columns a block: two blocks fill the 30 columns of range(A), so it stops after 1 iteration
    assert res.n_power_iter == 1 and "capped at min(m, n) = 30" in res.reason
    assert res.passes == 2 + ("formed by a last read" in res.reason)  # q + 1 reads (+1 if B needed a read)
    np.testing.assert_allclose(res.s, sv(A_)[:5], rtol=1e-12)  # the full range: exact
    widths.clear()
    res = ds.svd(A_.T, 5, method="block_krylov", n_power_iter=200, seed=0)  # wide: the same cap
    assert max(widths) <= 30
    np.testing.assert_allclose(res.s, sv(A_)[:5], rtol=1e-12)


def test_sparse_sign_empty_block():
    """An empty row block (a zero-row chunk, an MPI rank without rows) contributes nothing."""
    op = ds.make_operator("sparse_sign", 16, 100, seed=0)
    out = op.apply(np.zeros((0, 3)), 40)
    assert out.shape == (16, 3) and not out.any()
    assert op.apply_transpose(np.ones((16, 2)), 40, 0).shape == (0, 2)


def test_cli_exit_status_for_sketch_solve_is_zero_when_requested(tmp_path):
    """istop 8 (not verified) is what sketch_solve promises: the CLI exits 0 for it and prints istop 8."""
    import zarr

    zarr.save_array(str(tmp_path / "A.zarr"), A)
    zarr.save_array(str(tmp_path / "b.zarr"), B)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}

    def run(method, out):
        return subprocess.run([sys.executable, "-m", "distsketch.cli", "lstsq", str(tmp_path / "A.zarr"),
                               str(tmp_path / "b.zarr"), "--out", str(tmp_path / out), "--method", method,
                               "--seed", "0", "--quiet", "--workers", "1"], capture_output=True, text=True, env=env,
                              timeout=120)

    p = run("sketch_solve", "x1.zarr")
    assert p.returncode == 0, p.stderr
    assert '"istop": 8' in p.stdout and '"verified": false' in p.stdout


@pytest.mark.mpi
def test_mpi_rank_without_rows(tmp_path):
    """Three ranks over two chunks: one rank holds no rows (main: 'need at least one array to concatenate')."""
    pytest.importorskip("mpi4py")
    script = tmp_path / "empty_rank.py"
    script.write_text(
        "import numpy as np, distsketch as ds\n"
        "from mpi4py import MPI\n"
        "from distsketch.backends.mpi import MPIRowData, row_range\n"
        "comm = MPI.COMM_WORLD\n"
        "rng = np.random.default_rng(0)\n"
        "A = rng.standard_normal((300, 5)); b = rng.standard_normal(300)\n"
        "r0, r1 = row_range(300, comm.size, comm.rank, 150)\n"
        "res = ds.lstsq(MPIRowData(A[r0:r1], r0, 300, comm), b, seed=0)\n"
        "s = ds.svd(MPIRowData(A[r0:r1], r0, 300, comm), 3, seed=0).s\n"
        "ref = np.linalg.lstsq(A, b, rcond=None)[0]\n"
        "assert res.converged and np.linalg.norm(res.x - ref) <= 1e-10 * np.linalg.norm(ref), res\n"
        "assert np.allclose(s, np.linalg.svd(A, compute_uv=False)[:3], rtol=1e-10)\n"
        "counts = comm.gather(r1 - r0)\n"
        "if comm.rank == 0: print('rows per rank', sorted(counts), flush=True)\n")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    p = subprocess.run([mpiexec, "-n", "3", sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "rows per rank [0, 150, 150]" in p.stdout, p.stdout


def test_non_finite_sketch_is_a_non_finite_error():
    """A sketch that is not finite (overflow in S A of finite data) is a NonFiniteError, not FloatingPointError."""
    from distsketch.solve._precond import build_precond

    SA = np.ones((8, 3))
    SA[2, 1] = np.inf
    with pytest.raises(NonFiniteError, match=r"the sketch S A is not finite although A was"):
        build_precond(SA, None)


@pytest.mark.parametrize("method", ["sketch_precondition", "cholqr"])
def test_checkpoint_resume_of_scaled_data(tmp_path, monkeypatch, method):
    """A * 1e-300 is solved scaled; the scale is kept in the checkpoint, so a resumed run ends with the same x."""
    from distsketch import passes as P

    As = A * 1e-300
    full = ds.lstsq(As, B, method=method, atol=1e-15, btol=1e-15, seed=4)
    assert full.converged and rel(full.x, gelsd(A, B) * 1e300) <= 1e-10
    ck = tmp_path / "ck.npz"
    real, calls = P.lsqr_step_tiled, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == (7 if method == "sketch_precondition" else 1):
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(P, "lsqr_step_tiled", flaky)
    with pytest.raises(KeyboardInterrupt):
        ds.lstsq(As, B, method=method, atol=1e-15, btol=1e-15, seed=4, checkpoint=ck)
    assert ck.exists()
    monkeypatch.setattr(P, "lsqr_step_tiled", real)
    resumed = ds.lstsq(As, B, method=method, atol=1e-15, btol=1e-15, seed=4, checkpoint=ck)
    np.testing.assert_array_equal(resumed.x, full.x)
    assert resumed.passes == full.passes and resumed.converged

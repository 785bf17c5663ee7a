"""Sketch-preconditioned LSQR (distsketch/solve/_lsqr.py) against scipy.sparse.linalg.lsqr on LinearOperator(A N).

With the same operator ``M = A N``, right-hand side and tolerances, scipy's LSQR stopped after
``k`` iterations (``iter_lim=k``) gives the iterate ``N y_k`` and the estimates that the fused
one-read iteration must reproduce at its ``k``-th step: same ``x_k``, ``||r_k||``, ``||M.T r_k||``,
``||M||``, ``cond(M)``, ``||y_k||`` to rounding, and the same istop at the same iteration.
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from distsketch.backends import as_rowdata
from distsketch.operators import make_operator
from distsketch.solve._lsqr import Estimates, lsqr_precond, lsqr_stop
from distsketch.solve._precond import Precond, build_precond

M_ROWS, N_COLS = 2000, 30


def _problem(cond, consistent, seed=0):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((M_ROWS, N_COLS)))[0]
    V = np.linalg.qr(rng.standard_normal((N_COLS, N_COLS)))[0]
    A = (U * np.geomspace(1, 1 / cond, N_COLS)) @ V.T
    b = A @ rng.standard_normal(N_COLS) if consistent else rng.standard_normal(M_ROWS)
    return A, b


def _run_both(A, b, P, *, atol, btol, conlim, maxiter):
    data = as_rowdata(A)
    steps = []

    def record(st, est, istop):
        steps.append((st.itn, st.z.copy(), est, istop))

    lsqr_precond(data, data.distribute(b), P, np.zeros(A.shape[1]), damp=0.0, atol=atol, btol=btol, conlim=conlim,
                 maxiter=maxiter, bnorm=float(np.linalg.norm(b)), anorm_A=float(np.linalg.norm(A)),
                 on_iteration=record)
    # up to LSQR's own stop: after it lsqr_precond verifies x on the true residual and may restart
    stop = next((i for i, step in enumerate(steps) if step[3] is not None), len(steps) - 1)
    steps = steps[:stop + 1]
    op = spla.LinearOperator((A.shape[0], P.rank), matvec=lambda v: A @ P.apply(v),
                             rmatvec=lambda u: P.applyT(A.T @ u), dtype=np.float64)
    ref = [spla.lsqr(op, b, atol=atol, btol=btol, conlim=conlim, iter_lim=k)[:9] for k in range(1, len(steps) + 1)]
    return steps, ref


def _sketch_precond(A, d, seed=0):
    S = make_operator("gaussian", d, A.shape[0], seed=seed).toarray()
    return build_precond(S @ A, None).precond


@pytest.mark.parametrize("case, cond, consistent, precond, atol, conlim, maxiter, want", [
    # the preconditioned operator is well conditioned: the least-squares test (istop 2) stops it
    ("inconsistent", 1e3, False, "sketch", 1e-10, 1e8, 200, 2),
    # b in range(A): ||r|| falls to the btol test (istop 1)
    ("consistent", 1e3, True, "sketch", 1e-10, 1e8, 200, 1),
    # no preconditioner (N = I) on cond(A) = 100: the condition estimate passes conlim (istop 3)
    ("conlim", 1e2, False, "identity", 1e-14, 30, 200, 3),
    # the iteration limit (istop 7)
    ("maxiter", 1e2, False, "identity", 1e-14, 1e8, 6, 7),
])
def test_iterates_match_scipy_lsqr(case, cond, consistent, precond, atol, conlim, maxiter, want):
    A, b = _problem(cond, consistent)
    # d = 4n (lstsq's LSQR sketch): cond(A N) ~ 3. With d = 2n (cond ~ 6) two runs that differ only in
    # rounding (scipy on A @ (N v) and on the formed A N) separate to 1e-5 mid-run, then agree again
    P = _sketch_precond(A, 4 * N_COLS) if precond == "sketch" else Precond(R=np.eye(N_COLS))
    steps, ref = _run_both(A, b, P, atol=atol, btol=atol, conlim=conlim, maxiter=maxiter)
    assert 3 <= len(steps) <= maxiter
    normN = np.linalg.norm(P.apply(np.eye(N_COLS)), 2)
    for (k, z, est, istop), (y, istop_ref, itn, r1norm, _, anorm, acond, arnorm, xnorm) in zip(steps, ref):
        assert itn == k
        # iterates and estimates to rounding (the fused step forms beta u and M.T u in another order; seen
        # here: <= 1e-12): y_k (LSQR's iterate on M = A N) to 1e-10, x_k = N y_k to 1e-10 ||N|| ||y_k||
        rtol = 1e-10
        assert np.linalg.norm(z - y) <= rtol * np.linalg.norm(y), (k, case)
        assert np.linalg.norm(P.apply(z) - P.apply(y)) <= rtol * normN * np.linalg.norm(y), (k, case)
        assert est.rnorm == pytest.approx(r1norm, rel=rtol)
        # ||M|| and cond(M) accumulate every alpha_j, beta_j; the last ones, the norms of what is left once
        # the Krylov space holds the solution, differ most (seen: 1.6e-10 at the stopping iteration)
        assert est.anorm == pytest.approx(anorm, rel=10 * rtol)
        assert est.acond == pytest.approx(acond, rel=10 * rtol)
        assert est.xnorm == pytest.approx(xnorm, rel=rtol)
        # ||M.T r_k|| falls by many orders: compared on its rounding scale ||M|| (||r_k|| + ||M|| ||y_k||)
        assert abs(est.arnorm - arnorm) <= rtol * anorm * (r1norm + anorm * np.linalg.norm(y)), (k, case)
        if k < len(steps):  # scipy stopped by its iteration limit; our cascade found no test holding
            assert istop is None and istop_ref == 7, (k, case)
    # the same stop at the same iteration
    last = steps[-1][3] if steps[-1][3] is not None else 7
    assert last == ref[-1][1] == want, case


def _est(rnorm=1.0, arnorm=1.0, anorm=1.0, acond=1.0, xnorm=1.0):
    return Estimates(rnorm=rnorm, arnorm=arnorm, anorm=anorm, acond=acond, xnorm=xnorm)


@pytest.mark.parametrize("est, atol, btol, conlim, want", [
    (_est(), 1e-8, 1e-8, 1e8, None),  # nothing holds
    (_est(rnorm=1e-9, arnorm=1e-20), 1e-8, 1e-8, 1e8, 1),  # tests 1 and 2 hold: 1 wins
    (_est(arnorm=1e-9, acond=1e9), 1e-8, 1e-8, 1e8, 2),  # tests 2 and 3 hold: 2 wins
    (_est(acond=1e9), 1e-8, 1e-8, 1e8, 3),  # conlim exceeded
    (_est(rnorm=1e-17, xnorm=1.0), 0.0, 0.0, 0.0, 4),  # r at the machine precision (tolerances 0)
    (_est(arnorm=1e-17), 0.0, 0.0, 0.0, 5),  # M.T r at the machine precision
    (_est(acond=1e17), 0.0, 0.0, 0.0, 6),  # cond(M) beyond the machine precision
])
def test_stopping_cascade_order(est, atol, btol, conlim, want):
    """The cascade of lsqr_stop in the order its docstring states (later tests win), as scipy's."""
    assert lsqr_stop(est, bnorm=1.0, atol=atol, btol=btol, ctol=1.0 / conlim if conlim else 0.0) == want

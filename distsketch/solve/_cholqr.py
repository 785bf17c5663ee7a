"""Randomized Cholesky QR with refinement: full accuracy in 3-4 passes.

With ``N`` from the sketch, ``A N`` is well conditioned, so the Gram matrix of
``[A N; damp N]`` (one pass, formed block by block from ``A_i N``) has a stable
Cholesky factor ``R2``: ``Q = A N R2^{-1}`` is orthonormal to ``O(eps cond(A N)^2)``
(Fan, Guo, Lin 2021; Higgins, Szyld, Boman, Yamazaki 2023; Garrison & Ipsen 2024).
The normal equations of the saddle-point problem

    min ||A x - b||^2 + damp^2 ||x||^2 + 2 c.T x   <->   min ||y - b||^2 s.t. A.T y = c (+ ridge)

    (A.T A + damp^2 I) x = A.T b - c,     y = b - A x

are solved in the preconditioned coordinates ``x = N z`` with ``G = R2.T R2``; each
refinement step is one pass that returns ``r = b - A x`` and ``A.T r`` together, then

    g = A.T r - damp^2 x - c,    x <- x + N G^{-1} N.T g

(corrected semi-normal equations with a factor of ``A N`` accurate to working precision,
so each step contracts the error by ``O(eps cond(A))``). Stop when

    istop 1:  ||g|| <= btol ||b|| + atol ||A|| ||x||   (only meaningful for b = 0, the
              minimum-norm problem, where g = c - A.T y is the constraint residual)
    istop 1:  ||r|| <= btol ||b|| + atol ||A|| ||x||   (consistent systems)
    istop 2:  ||g|| <= atol ||A|| ||r||
    istop 5:  ||g|| stopped falling and ||g|| <= rounding_level (10 sqrt(n) eps ||A|| (||r|| + ||A|| ||x||)
              + ||c||): the rounding level is reached, checked on the true residual
    istop 9:  ||g|| stopped falling above that level: the sketch did not embed A (not converged)

The normal-equation variant (``lstsq(method="normal_cholqr")``, :func:`gram_cholesky`)
reads no sketch at all: its first read forms ``A.T A`` and ``A.T b``
(:func:`distsketch.passes.normal_gram`), and ``N = R^{-1}`` with ``R.T R = A.T A + damp^2 I``
is the Cholesky factor of that Gram matrix itself (after scaling its columns to unit
norm), so ``G = I`` above. ``A.T A`` carries a rounding error ``~ eps |A|.T |A|``: the
column-scaled factor is used only while its 2-norm condition estimate is at most
``NORMAL_COND_LIMIT`` (1e7), where each corrected semi-normal step contracts the error by
``~ eps cond^2 < 1e-2`` (Bjorck, "Numerical methods for least squares problems", SIAM 1996,
section 2.9); beyond it (or when the Cholesky fails) the sketch is read and ``cholqr``
runs. At least one refinement step is taken (``min_steps=1``): the first ``x`` has forward
error ``eps cond(A)^2``, one step brings it to the QR-based solution's.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import passes
from ..errors import GramFactorError
from ._result import rounding_level, rounding_stop

__all__ = ["cholqr_solve", "gram_cholesky", "cond2_estimate", "GramFactorError", "NORMAL_COND_LIMIT"]

#: largest condition estimate of the column-scaled Cholesky factor of A.T A for which the
#: normal-equation path keeps it: A.T A carries an error ~ eps |A|.T |A|, so the factor is known
#: to ~ eps cond^2 (< 1e-2 here) and each refinement step contracts the error by about that
NORMAL_COND_LIMIT = 1e7


def gram_factor(data, b, P, damp):
    """One pass: Cholesky factor of the Gram matrix of ``[A N; damp N]`` and ``N.T A.T b``."""
    extra = [] if b is None else [b]
    res = passes.gram(data, extra=extra, right=P)
    G = res[0]
    if damp:
        NtN = P.applyT(P.apply(np.eye(P.rank)))
        G = G + damp**2 * NtN
    try:
        L = scipy.linalg.cholesky(G, lower=False)
    except np.linalg.LinAlgError as exc:
        raise GramFactorError(
            f"the Gram matrix of A N (N from the sketch, rank {P.rank}) is not positive definite ({exc}): the "
            "sketch did not embed the column space of A; use a larger d (formerly sketch_size) or a mixing kind "
            "('sparse_sign', 'gaussian', 'srct': uniform sampling fails on coherent data)") from None
    h = res[1][:, 0] if b is not None else np.zeros(P.rank)
    return L, h


def cond2_estimate(R, iters: int = 8) -> float:
    """2-norm condition number of the triangular ``R``, from a few power steps (``O(n^2)`` each).

    ``sigma_max`` from power iteration on ``R.T R``, ``sigma_min`` from inverse iteration (two
    triangular solves a step), both from a fixed start. Each Rayleigh quotient lies inside
    the spectrum, so the estimate is a lower bound of ``cond_2(R)``: on geometric spectra
    (cond 1e5-1e7, n = 200-2,000) 8 steps give 0.92-0.95 of it (the tests ask >= 0.8), so the
    gate may admit a problem up to ~10% past the limit. LAPACK's ``trcon`` 1-norm estimate,
    used for the rank decision, overstates ``cond_2`` by up to ``n`` (70x seen at n = 1,000),
    which would send problems well inside the normal path's range to ``cholqr``.
    """
    n = R.shape[0]
    v = np.random.default_rng(0).standard_normal(n)
    w = v.copy()
    smax2 = smin2inv = 0.0
    for _ in range(iters):
        v /= np.linalg.norm(v)
        Rv = R @ v
        smax2 = float(Rv @ Rv)  # v.T R.T R v <= sigma_max^2
        v = R.T @ Rv
        w /= np.linalg.norm(w)
        y = scipy.linalg.solve_triangular(R, w, trans="T", check_finite=False)
        smin2inv = float(y @ y)  # w.T (R.T R)^-1 w <= 1 / sigma_min^2
        w = scipy.linalg.solve_triangular(R, y, check_finite=False)
    return float(np.sqrt(smax2 * smin2inv))


def gram_cholesky(G, damp):
    """``(R, cond_scaled, cond)``: ``R.T R = G + damp^2 I`` for ``G = A.T A``, with condition estimates.

    The Cholesky runs on ``D (G + damp^2 I) D`` (``D`` scales the columns of ``[A; damp I]`` to
    unit norm), and ``R = R_s D^{-1}``: ``cond_scaled`` is :func:`cond2_estimate` of ``R_s``, the
    condition that bounds what the rounding of ``G`` (``|dG| <= gamma_m |A|.T |A|``, column by
    column) does to the refinement; ``cond`` that of ``R`` itself, the estimate of ``cond(A)``
    reported. Raises :class:`GramFactorError` when ``G`` has a zero or non-finite diagonal or the
    Cholesky fails (``A`` numerically rank-deficient). ``n^3 / 3`` flops.
    """
    n = G.shape[0]
    Gd = G + damp**2 * np.eye(n) if damp else np.array(G, dtype=np.float64)
    dg = np.diag(Gd).copy()
    if not np.all(np.isfinite(Gd)):
        raise GramFactorError("A.T A is not finite")
    if not np.all(dg > 0):
        raise GramFactorError(f"column {int(np.flatnonzero(~(dg > 0))[0])} of A is zero")
    dsc = 1.0 / np.sqrt(dg)
    Gs = Gd * dsc[:, None] * dsc[None, :]
    Rs, info = scipy.linalg.lapack.dpotrf(Gs, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise GramFactorError(f"the column-scaled A.T A is not numerically positive definite (dpotrf info {info})")
    cond_scaled = cond2_estimate(Rs)
    R = np.ascontiguousarray(Rs / dsc[None, :])
    # the estimate of R's own condition on R times a power of two (exact): R's entries can be near
    # the ends of the float64 range (||A|| ~ 1e+-77 and beyond), where R.T R v would overflow or underflow
    top = float(np.max(np.abs(R)))
    return R, cond_scaled, cond2_estimate(np.ldexp(R, -int(np.frexp(top)[1])))


def normal_contraction(R):
    """Upper estimate of the factor by which one corrected semi-normal step shrinks the forward
    error with the Cholesky factor ``R`` of ``A.T A``: ``2 eps cond_s^2``, ``cond_s`` the 2-norm
    estimate of ``R`` with unit columns (the scaling :func:`gram_cholesky` factors in), at most 1/2.
    Measured ratios on consistent problems (m 5,000-20,000, n 30-200, cond 1e5-9e6, with and
    without column scales over 4 decades) stayed below ``0.6 eps cond_s^2``."""
    Rs = R / np.linalg.norm(R, axis=0)[None, :]
    return float(min(0.5, 2 * np.finfo(np.float64).eps * cond2_estimate(Rs) ** 2))


def cholqr_solve(data, b, c, P, *, damp, atol, btol, maxiter, bnorm, anorm_A, x0=None, checkpoint=None,
                 state=None, factor=None, min_steps=0, gram=None, contraction=None, cond=None):
    """Return ``(x, r, istop, steps, normr, normar, history)``; ``r = b - A x`` distributed.

    ``factor=(R2, N.T A.T b)`` skips the Gram pass (the normal-equation path, whose ``N`` is
    the inverse Cholesky factor of ``A.T A`` itself: :func:`gram_cholesky`, ``R2 = I``). ``min_steps``
    refinement steps are taken before any stopping test is applied (and only iterates after
    them are returned): the normal path's first ``x`` can pass the residual tests while its
    forward error is ``eps cond(A)^2``.

    ``contraction`` (the normal path: ``rho``, an upper estimate of how much one corrected
    step shrinks the forward error, ``~ eps cond_s^2`` for the column-scaled condition ``cond_s``
    of the Cholesky factor of ``A.T A``) and ``cond`` (the estimate of ``cond(A)``) make the
    forward error, which the residual tests cannot see along ``A``'s small singular directions,
    a condition of every stop. After a read, the step ``dx`` it gives measures the error of ``x``
    (``||x - x*|| ~ ||dx|| / (1 - rho)``) and predicts that of ``x + dx`` (``rho / (1 - rho)
    ||dx||``). A tolerance test may stop at ``x``, and a step may be checked from ``A.T A``, only
    when that error is within ``tau = sqrt(n) eps cond (||x|| + cond ||r|| / ||A||_F)``, the
    accuracy a backward-stable solver has; ``rho`` is raised to the observed ratio of successive
    steps when that is larger. The refinement also ends when a step is more than half the one
    before it (it has reached what rounding allows: istop 5 or 9 on the true residuals of the
    last read's ``x``, which is returned).

    ``gram=A.T A`` (the normal path; the returned ``r`` is then ``None``) lets a step be
    checked without reading ``A`` again. The read before the step gave the true
    ``g = A.T r - damp^2 x - c`` of ``x``; after ``x+ = x + dx``, by the identity
    ``A.T r+ = A.T r - A.T A dx``,

        g+ = g - (A.T A + damp^2 I) dx,    ||r+||^2 = ||r||^2 - 2 dx.T A.T r + dx.T A.T A dx,

    with ``A.T A`` known to ``|G - A.T A| <= gamma_m |A|.T |A|`` (``gamma_m = m eps / (1 - m eps)``,
    any order of summation), so ``||g+||`` is reported with ``gamma_m ||A||_F^2 ||dx||``
    added and ``||r+||`` is bracketed by ``||r|| -+ ||A dx||``. ``dx`` is the small correction
    (``~ eps cond(A)^2 ||x||``), so this bound is far below what a read would resolve; when the
    stopping tests hold on these bounds (each test on its worse side) the step is returned
    without the read that would otherwise check it (``history[-1]["from_gram"]`` is true).
    Otherwise the next read checks it as usual.
    """
    min_steps = min(min_steps, maxiter)
    n = P.V.shape[0] if P.R is None else P.R.shape[0]
    cvec = np.zeros(n) if c is None else c
    if state is not None:
        R2, x, steps = state["R2"], state["x"], int(state["steps"])
    else:
        R2, h = factor if factor is not None else gram_factor(data, b, P, damp)
        if x0 is not None:
            x = np.asarray(x0, dtype=np.float64)
        else:
            z = scipy.linalg.cho_solve((R2, False), h - P.applyT(cvec))
            x = P.apply(z)
        steps = 0
        if checkpoint is not None:
            checkpoint.save(stage=np.array("cholqr"), R2=R2, x=x, steps=np.array(steps))
    anrm = float(np.sqrt(anorm_A**2 + damp**2 * n))
    history = []
    best = None  # (x, r, normr, normg) of the iterate returned: the smallest ||g|| (the latest on the normal path)
    fwd = contraction is not None
    eps = np.finfo(np.float64).eps
    prev_dxn = None  # ||dx|| of the step that made this x (the normal path)
    while True:
        # one pass: r = b - A x and A.T r
        r, ATr, rr = passes.lsqr_step_tiled(data, -x, b, -1.0 if b is not None else 0.0)
        g = ATr[:, 0] - damp**2 * x - cvec
        normr = float(np.sqrt(rr + damp**2 * (x @ x)))
        normg = float(np.linalg.norm(g))
        xnorm = float(np.linalg.norm(x))
        history.append({"step": steps, "normr": normr, "normar": normg})
        dx = None
        if fwd:  # the step from this read's true g, and what it says of x's forward error
            dx = P.apply(scipy.linalg.cho_solve((R2, False), P.applyT(g)))
            dxn = float(np.linalg.norm(dx))
            rho = contraction if prev_dxn is None or not prev_dxn > 0 else max(contraction, dxn / prev_dxn)
            tau = np.sqrt(n) * eps * cond * (xnorm + cond * normr / anrm)
            accurate = rho < 1 and dxn <= (1 - rho) * tau
            history[-1]["dx"] = dxn
        if steps < min_steps:
            pass  # no test yet: see min_steps
        elif fwd:
            best = (x, r, normr, normg)
        elif best is None or normg < best[3]:
            best = (x, r, normr, normg)
        if steps < min_steps:
            pass  # no test yet: see min_steps
        elif fwd and not accurate:
            pass  # no residual test may stop before the forward error is within tau
        elif b is not None and normr <= btol * bnorm + atol * anrm * xnorm:
            istop, best = 1, (x, r, normr, normg)  # the test held on this x: return it
            break
        elif b is None and normg <= btol * np.linalg.norm(cvec) + atol * anrm * np.sqrt(rr):
            istop, best = 1, (x, r, normr, normg)
            break
        elif normg <= atol * anrm * normr:
            istop, best = 2, (x, r, normr, normg)
            break
        elif not fwd and len(history) >= 2 + min_steps and normg > 0.5 * history[-2]["normar"]:
            istop = 5  # stagnation: rounding level reached (checked below on the best iterate), or a failed sketch
            break
        if fwd and steps >= min_steps and prev_dxn is not None and dxn > 0.5 * prev_dxn:
            istop = 5  # the steps stopped shrinking: the forward error is at what rounding allows
            break
        if steps >= maxiter:
            istop = 7
            break
        if dx is None:
            dz = scipy.linalg.cho_solve((R2, False), P.applyT(g))
            dx = P.apply(dz)
        x = x + dx
        steps += 1
        if checkpoint is not None:
            checkpoint.save(stage=np.array("cholqr"), R2=R2, x=x, steps=np.array(steps))
        if fwd:
            prev_dxn = dxn
            if not rho < 1 or rho / (1 - rho) * dxn > tau:
                continue  # x + dx may still be off by more than tau: the next read checks it
        if gram is not None and steps >= min_steps:
            done = _checked_by_gram(gram, data.shape[0], x, dx, g, ATr[:, 0], rr, damp=damp, atol=atol, btol=btol,
                                    bnorm=bnorm, anrm=anrm, cnorm=float(np.linalg.norm(cvec)),
                                    consistent_test=b is not None)
            if done is not None:
                istop, normr, normg = done
                history.append({"step": steps, "normr": normr, "normar": normg, "from_gram": True})
                return x, None, istop, steps, normr, normg, history
    x, r, normr, normg = best
    if istop == 5:  # 5 if the true ||A.T r - damp^2 x - c|| of the returned x is at the rounding level, else 9
        istop = rounding_stop(normg, anrm, normr, float(np.linalg.norm(x)), n, float(np.linalg.norm(cvec)))
    return x, r, istop, steps, normr, normg, history


def _checked_by_gram(G, m, x, dx, g, ATr, rr, *, damp, atol, btol, bnorm, anrm, cnorm, consistent_test):
    """The stopping tests of :func:`cholqr_solve` on ``x = x_prev + dx`` from ``A.T A`` (no read).

    Returns ``(istop, normr, normg)`` when a test holds on the bounds, else ``None``;
    ``normg`` is ``||g+||`` plus the bound on what the rounding of ``G`` can hide, plus the
    rounding of the evaluation of ``g`` (which ``dx`` was fitted to); each test
    uses the side of the ``||r+||`` bracket that is unfavourable to it, and the ``normr``
    reported is the expansion of ``||r+||^2`` clipped to the bracket, or the bracket's upper end
    where the expansion is within its own rounding error (it would cancel to 0 for a consistent system).
    """
    eps = np.finfo(np.float64).eps
    gamma = m * eps / (1.0 - m * eps) if m * eps < 0.5 else np.inf
    Gdx = G @ dx
    g_new = g - Gdx - damp**2 * dx
    dxn = float(np.linalg.norm(dx))
    fro2 = float(np.trace(G))  # ||A||_F^2
    hidden = gamma * fro2 * dxn
    adx = float(np.sqrt(max(float(dx @ Gdx), 0.0) + hidden * dxn))  # >= ||A dx||
    r_prev = float(np.sqrt(rr))
    xx = float(x @ x)
    r_hi = float(np.sqrt((r_prev + adx) ** 2 + damp**2 * xx))
    # g came from one evaluation of A.T r, which rounds at ~ eps (||A|| (||r|| + ||A|| ||x||) + ||c||):
    # dx was fitted to that rounding too, so it stays in the bound (a read of x + dx would show as much)
    noise = eps * (anrm * (r_hi + anrm * float(np.sqrt(xx))) + cnorm)
    normg = float(np.linalg.norm(g_new)) + hidden + noise
    r_lo = float(np.sqrt(max(r_prev - adx, 0.0) ** 2 + damp**2 * xx))
    # the reported ||r+||: the expansion, inside the bracket; where the expansion is within its own
    # rounding (||r+|| tiny next to ||r|| and the terms subtracted: a consistent system), the upper end
    # of the bracket, so that a residual is never reported smaller than it may be
    dATr, dGd = float(dx @ ATr), float(dx @ Gdx)
    rr_new = rr - 2.0 * dATr + dGd
    unsure = 4 * eps * (rr + 2 * abs(dATr) + abs(dGd)) + hidden * dxn
    if rr_new > unsure:
        normr = min(max(float(np.sqrt(rr_new + damp**2 * xx)), r_lo), r_hi)
    else:
        normr = r_hi
    xnorm = float(np.sqrt(xx))
    if consistent_test and r_hi <= btol * bnorm + atol * anrm * xnorm:
        return 1, normr, normg
    if not consistent_test and normg <= btol * cnorm + atol * anrm * max(r_prev - adx, 0.0):
        return 1, normr, normg
    if normg <= atol * anrm * r_lo:
        return 2, normr, normg
    if normg <= rounding_level(anrm, r_lo, xnorm, len(x), cnorm):
        return 5, normr, normg  # at the level rounding alone explains: a read could not show more
    return None


def cholqr_minnorm(data, c, P, *, atol, btol, maxiter, anorm_A, checkpoint=None, state=None):
    """Minimum-norm solution of ``T.T y = c`` (``T`` tall): ``y = T w``, refined on ``y`` itself.

    ``y`` is accumulated from increments ``dy = T N G^{-1} N.T g`` with ``g = c - T.T y``;
    each pass (:func:`distsketch.passes.matmul_rmatmul`) returns ``dy`` and ``T.T dy``
    together, so ``s = T.T y`` is kept up to date without a pass of its own. Refining
    ``y`` rather than ``w`` keeps the error at ``eps ||T|| ||y||`` even when ``||w||`` is
    ``cond(T)`` times larger. Returns ``(y, istop, steps, normg, history)``.
    """
    if state is not None:
        R2 = state["R2"]
        y = data.distribute(state["y"], check=False)
        s, steps = state["s"], int(state["steps"])
        g = c - s
    else:
        R2, _ = gram_factor(data, None, P, 0.0)
        y, s, steps, g = None, np.zeros_like(c), 0, c.copy()
    anrm = float(anorm_A)
    cnorm = float(np.linalg.norm(c))
    history, best, istop = [], None, 7
    while True:
        w = P.apply(scipy.linalg.cho_solve((R2, False), P.applyT(g)))
        dy, Tdy = passes.matmul_rmatmul(data, w)  # one pass: dy = T w and T.T dy
        y = dy if y is None else data.combine(np.add, y, dy)
        s = s + Tdy[:, 0]
        g = c - s
        normg = float(np.linalg.norm(g))
        ynorm = data.norm(y)
        history.append({"step": steps, "normr": normg, "ynorm": ynorm})
        if best is None or normg < best[1]:
            best = (y, normg)
        if checkpoint is not None:
            checkpoint.save(stage=np.array("minnorm"), R2=R2, y=data.gather(y), s=s, steps=np.array(steps + 1))
        if normg <= btol * cnorm + atol * anrm * ynorm:
            istop, best = 1, (y, normg)  # the test held on this y: return it
            break
        if len(history) >= 2 and normg > 0.5 * history[-2]["normr"]:
            istop = 4  # ||A x - b|| stopped falling: small enough for this machine if at the rounding level
            break
        if steps >= maxiter:
            istop = 7
            break
        steps += 1
    ynorm = data.norm(best[0])
    # ||c - T.T y|| that rounding alone explains: eps (||T|| ||y|| + ||c||), as rounding_level
    if istop == 4:
        istop = rounding_stop(best[1], anrm, 0.0, 0.0, len(c), anrm * ynorm + cnorm, code=4)
    return best[0], istop, steps, best[1], history

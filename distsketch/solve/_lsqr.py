"""Sketch-preconditioned LSQR with the fused step: one read of ``A`` per iteration.

Golub-Kahan bidiagonalisation of ``M = [A N; damp N]`` (``N`` from the sketch), as in
Paige & Saunders' LSQR (scipy ``lsqr``). With ``u = c u_raw`` the step

    beta u_new = M v - alpha u,        alpha_new v_new = M.T u_new - beta v

needs ``A (N v) - alpha c u_raw`` and ``A.T`` of it: :func:`distsketch.passes.lsqr_step_tiled`
computes both and ``||.||^2`` in one read (``u_new = w / beta`` is never formed on the
``m`` rows). Stopping tests are scipy's, on the preconditioned operator:

    istop 1:  ||r|| <= btol ||b|| + atol ||M|| ||z||
    istop 2:  ||M.T r|| <= atol ||M|| ||r||

When they hold, a verification pass computes the true ``r = b - A x`` and ``A.T r`` of
the returned ``x``; if the same tests on ``A`` (with ``||A||_F`` from the sketch) fail,
LSQR restarts from ``x`` on that residual (iterative refinement: Epperly, Meier,
Nakatsukasa, arXiv 2406.03468; Xu et al.), which makes the answer backward stable.
When the refinement stops improving, istop 5 ("good enough for this machine") is
reported only if the true ``||A.T r||`` is at the rounding level
(:func:`~distsketch.solve._result.rounding_level`); otherwise istop 9 (the sketch did not
embed ``A``: not converged).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import passes
from ._result import rounding_stop

__all__ = ["lsqr_precond", "lsqr_stop", "Estimates", "LSQRState"]

EPS = np.finfo(np.float64).eps


def _true_residual(data, x, b):
    """One pass: r = b - A x (distributed), A.T r and ||r||^2."""
    return passes.lsqr_step_tiled(data, -x, b, -1.0 if b is not None else 0.0)


class LSQRState:
    """Every quantity LSQR carries between iterations (what a checkpoint saves)."""

    SCALARS = ("alpha", "beta", "c", "rhobar", "phibar", "anorm", "ddnorm", "xxnorm", "zz", "cs2", "sn2",
               "res2", "itn", "restarts")

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def arrays(self, data):
        out = {k: np.asarray(getattr(self, k)) for k in ("x0", "z", "v", "wdir", "u_bot")}
        out["u_top"] = data.gather(self.u_top)
        out.update({k: np.asarray(getattr(self, k)) for k in self.SCALARS})
        return out

    @classmethod
    def from_arrays(cls, data, arr):
        kw = {k: arr[k] for k in ("x0", "z", "v", "wdir", "u_bot")}
        kw["u_top"] = data.distribute(arr["u_top"], check=False)
        kw.update({k: arr[k].item() for k in cls.SCALARS})
        kw["itn"], kw["restarts"] = int(kw["itn"]), int(kw["restarts"])
        return cls(**kw)


def _start(data, b, P, x0, damp, w, ATw, ww, itn=0, restarts=0):
    """Initial bidiagonalisation vectors for the correction problem from x0 (r0 = b - A x0)."""
    r = P.rank
    u_bot = -damp * x0 if damp else np.zeros(0)
    beta = float(np.sqrt(ww + u_bot @ u_bot))
    v = np.zeros(r)
    alpha, c = 0.0, 0.0
    if beta > 0:
        c = 1.0 / beta
        g = ATw[:, 0] + (damp * u_bot if damp else 0.0)
        p = P.applyT(g) * c
        alpha = float(np.linalg.norm(p))
        if alpha > 0:
            v = p / alpha
    return LSQRState(x0=x0, z=np.zeros(r), v=v, wdir=v.copy(), u_top=w, u_bot=u_bot, alpha=alpha, beta=beta, c=c,
                     rhobar=alpha, phibar=beta, anorm=0.0, ddnorm=0.0, xxnorm=0.0, zz=0.0, cs2=-1.0, sn2=0.0,
                     res2=0.0, itn=itn, restarts=restarts)


class Estimates(NamedTuple):
    """LSQR's running estimates after an iteration, on ``M = [A N; damp N]`` (scipy's names)."""

    rnorm: float  # ||r_k|| (with the damping rows)
    arnorm: float  # ||M.T r_k||
    anorm: float  # ||M||_F, accumulated from the bidiagonal
    acond: float  # cond(M) estimate
    xnorm: float  # ||z_k||


def lsqr_stop(est: Estimates, *, bnorm: float, atol: float, btol: float, ctol: float) -> int | None:
    """The stopping cascade of LSQR (Paige & Saunders 1982, section 6; scipy ``lsqr``): istop or None.

    With ``test1 = ||r|| / ||b||``, ``test2 = ||M.T r|| / (||M|| ||r||)``,
    ``test3 = 1 / cond(M)`` and ``rtol = btol + atol ||M|| ||z|| / ||b||``, later tests win::

        6  1 + test3 <= 1                          cond(M) too large for this machine
        5  1 + test2 <= 1                          M.T r at the machine precision
        4  1 + test1 / (1 + ||M|| ||z|| / ||b||) <= 1   r at the machine precision
        3  test3 <= ctol  (ctol = 1 / conlim)      cond(M) exceeds conlim
        2  test2 <= atol                           least-squares solution good enough
        1  test1 <= rtol                           A x - b small enough

    These are estimates: :func:`lsqr_precond` then verifies the returned ``x`` on the true residual.
    """
    test1 = est.rnorm / bnorm
    test2 = est.arnorm / (est.anorm * est.rnorm + EPS)
    test3 = 1.0 / (est.acond + EPS)
    t1 = test1 / (1 + est.anorm * est.xnorm / bnorm)
    rtol = btol + atol * est.anorm * est.xnorm / bnorm
    istop = None
    if 1 + test3 <= 1:
        istop = 6
    if 1 + test2 <= 1:
        istop = 5
    if 1 + t1 <= 1:
        istop = 4
    if test3 <= ctol:
        istop = 3
    if test2 <= atol:
        istop = 2
    if test1 <= rtol:
        istop = 1
    return istop


def _iterate(st: LSQRState, data, P, damp) -> Estimates:
    """One LSQR iteration (one read of ``A``): the next bidiagonalisation step, the plane rotation, the
    update of ``z`` and of the estimates (Paige & Saunders' recurrences). Updates ``st`` in place."""
    st.itn += 1
    Nv = P.apply(st.v)
    # invariant: w = A N v - alpha u  (u = c u_raw),  beta u_new = [w; wb]
    w, ATw, ww = passes.lsqr_step_tiled(data, Nv, st.u_top, st.alpha * st.c)
    wb = damp * Nv - st.alpha * st.c * st.u_bot if damp else np.zeros(0)
    beta = float(np.sqrt(ww + wb @ wb))
    st.anorm = float(np.sqrt(st.anorm**2 + st.alpha**2 + beta**2))
    if beta > 0:
        st.c = 1.0 / beta
        st.u_top, st.u_bot = w, wb
        p = P.applyT(ATw[:, 0] + (damp * wb if damp else 0.0)) * st.c - beta * st.v
        st.alpha = float(np.linalg.norm(p))
        if st.alpha > 0:
            st.v = p / st.alpha
    st.beta = beta
    # plane rotation eliminating the subdiagonal beta of the bidiagonal matrix
    rho = float(np.hypot(st.rhobar, beta))
    cs, sn = st.rhobar / rho, beta / rho
    theta = sn * st.alpha
    st.rhobar = -cs * st.alpha
    phi = cs * st.phibar
    st.phibar = sn * st.phibar
    tau = sn * phi
    t1, t2 = phi / rho, -theta / rho
    st.ddnorm += float(np.linalg.norm(st.wdir / rho) ** 2)
    st.z = st.z + t1 * st.wdir
    st.wdir = st.v + t2 * st.wdir
    # estimate ||z|| (Paige & Saunders' recurrence)
    delta = st.sn2 * rho
    gambar = -st.cs2 * rho
    rhs = phi - delta * st.zz
    zbar = rhs / gambar
    xnorm = float(np.sqrt(st.xxnorm + zbar**2))
    gamma = float(np.hypot(gambar, theta))
    st.cs2, st.sn2 = gambar / gamma, theta / gamma
    st.zz = rhs / gamma
    st.xxnorm += st.zz**2
    return Estimates(rnorm=float(np.sqrt(st.phibar**2 + st.res2)), arnorm=float(st.alpha * abs(tau)),
                     anorm=st.anorm, acond=float(st.anorm * np.sqrt(st.ddnorm)), xnorm=xnorm)


def lsqr_precond(data, b, P, x0, *, damp, atol, btol, conlim, maxiter, bnorm, anorm_A, checkpoint=None,
                 every=5, state=None, on_iteration=None):
    """Run preconditioned LSQR from ``x0``; return ``(x, r, istop, itn, normr, normar, history)``.

    ``r`` is the distributed true residual ``b - A x`` of the returned ``x``.
    ``on_iteration(state, estimates, istop)`` is called after each iteration (``x_k`` is
    ``state.x0 + N state.z``; ``istop`` that of :func:`lsqr_stop`, before verification).
    """
    ctol = 1.0 / conlim if conlim > 0 else 0.0
    history = []
    best = None
    if state is None:
        w, ATw, ww = _true_residual(data, x0, b)
        st = _start(data, b, P, x0, damp, w, ATw, ww)
    else:
        st = state
    while True:
        istop = None
        if st.alpha * st.beta == 0:
            istop = 0 if st.beta == 0 else 2  # r0 = 0, or M.T r0 = 0: x0 already solves it
        while istop is None:
            if st.itn >= maxiter:
                istop = 7
                break
            est = _iterate(st, data, P, damp)
            history.append({"iteration": st.itn, "normr_est": est.rnorm, "normar_est": est.arnorm})
            istop = lsqr_stop(est, bnorm=bnorm, atol=atol, btol=btol, ctol=ctol)
            if on_iteration is not None:
                on_iteration(st, est, istop)
            if checkpoint is not None and istop is None and st.itn % every == 0:
                checkpoint.save(stage=np.array("lsqr"), **st.arrays(data))
        x = st.x0 + P.apply(st.z)
        # verification pass: the true residual of the returned x (also the restart's first step)
        w, ATw, ww = _true_residual(data, x, b)
        g = ATw[:, 0] - (damp**2 * x if damp else 0.0)
        normr = float(np.sqrt(ww + (damp**2 * (x @ x) if damp else 0.0)))
        normar = float(np.linalg.norm(g))
        anrm = float(np.sqrt(anorm_A**2 + (damp**2 * len(x) if damp else 0.0)))
        history.append({"iteration": st.itn, "normr": normr, "normar": normar, "verified": True})
        ok1 = normr <= btol * bnorm + atol * anrm * np.linalg.norm(x)
        ok2 = normar <= atol * anrm * normr
        if best is None or normar < best[3]:
            best = (x, w, normr, normar)
        prev = [h for h in history if h.get("verified")]
        stagnated = len(prev) >= 2 and normar > 0.5 * prev[-2]["normar"]
        if istop in (3, 6, 7) or ok1 or ok2 or stagnated or st.restarts >= 3:
            if ok1 or ok2:  # the test held on the true residual of this x: return it
                return x, w, 1 if ok1 else 2, st.itn, normr, normar, history
            x, w, normr, normar = best  # the verified iterate with the smallest ||A.T r||
            if istop not in (3, 6, 7):  # the refinement stopped: 5 at the rounding level, else 9
                istop = rounding_stop(normar, anrm, normr, float(np.linalg.norm(x)), len(x))
            return x, w, istop, st.itn, normr, normar, history
        st = _start(data, b, P, x, damp, w, ATw, ww, itn=st.itn, restarts=st.restarts + 1)

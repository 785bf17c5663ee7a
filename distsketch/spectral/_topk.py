"""The top of a layer's spectrum by the randomized low-rank drivers, for layers too large for a
full eigendecomposition (``M * rf > max_evals``).

WeightWatcher skips such layers. Here the largest ``k`` eigenvalues of each slice's Gram matrix
come from :func:`distsketch.lowrank.svd` (block Krylov), and the power law is fitted to the pooled
values above the largest of the slices' ``k``-th computed values (below it, some slice's values
are unknown). Ritz values are lower bounds (the i-th largest is at most the i-th eigenvalue), so
where the lowest ones are rough an eigenvalue just above the cut can be missing; the tail the
reported fit uses is checked for accuracy, the candidates below it are only as good as the Ritz
values. The KS search of :mod:`._powerlaw` over the computed candidates gives the numbers a full
fit gives for those candidates (``alpha_i`` and ``D_i`` depend only on the eigenvalues at and
above ``x_i``); what is not known is whether a candidate below would have had a smaller ``D``.

How accurate the Ritz values are is judged in :func:`._analyze.analyze_layer_topk`: for a Ritz pair
``(theta, v)`` of ``G = W^T W``, some eigenvalue lies within ``||G v - theta v||`` of ``theta``
(Bauer-Fike for symmetric matrices; rigorous but pessimistic in clusters), and the change of
each value between two successive sizes ``k`` and ``2k`` estimates the error of the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._esd import singular_values_squared

__all__ = ["TopSpectrum", "top_spectrum", "no_better_fit_below"]


@dataclass(frozen=True)
class TopSpectrum:
    """The complete top of a pooled spectrum.

    evals : ascending eigenvalues, every eigenvalue of the layer at or above ``evals[0]``
    rel_residual : ``||G v - theta v|| / theta`` for each of ``evals`` (same order)
    fro2 : sum of all eigenvalues (``||W||_F^2`` over the slices), exact
    passes : reads of the weights (all slices together count once per read)
    """

    evals: np.ndarray
    rel_residual: np.ndarray
    fro2: float
    passes: int


def top_spectrum(Wmats, k, *, n_iter=3, seed=None) -> TopSpectrum:
    """Largest ``k`` Ritz values of ``W^T W`` for each matrix in ``Wmats`` with their relative
    residuals, pooled and cut to the part complete in count (everything above the highest of
    the slices' smallest computed values). ``seed``: a ``SeedSequence`` (slice ``i`` uses child
    ``i``)."""
    seed = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    from ..lowrank import svd as rsvd

    vals, res, cut, fro2, passes = [], [], 0.0, 0.0, 0
    for i, W in enumerate(Wmats):
        W = np.asarray(W, dtype=np.float64)
        m = min(W.shape)
        r = min(k, m)
        over = min(max(10, r // 2), m - r)
        if (n_iter + 1) * (r + over) > m:  # a Krylov basis this wide costs more than the whole spectrum
            vals.append(singular_values_squared([W])[0][0])
            res.append(np.zeros(m))
            fro2 += float(np.sum(vals[-1]))
            passes = max(passes, 1)
            continue
        out = rsvd(W, r, method="block_krylov", n_power_iter=n_iter, n_oversamples=over,
                   seed=np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, i)))
        s2 = np.asarray(out.s, dtype=np.float64) ** 2
        V = np.asarray(out.Vt).T if W.shape[0] >= W.shape[1] else np.asarray(out.U)
        # certificate: one more read, G V = W^T (W V)
        A = W if W.shape[0] >= W.shape[1] else W.T
        GV = A.T @ (A @ V)
        with np.errstate(divide="ignore", invalid="ignore"):
            rr = np.linalg.norm(GV - V * s2, axis=0) / s2
        rr = np.where(s2 > 0, rr, np.inf)
        if r < m:  # eigenvalues below this slice's smallest computed one are unknown
            cut = max(cut, float(s2.min()))
        vals.append(s2)
        res.append(rr)
        fro2 += float(out.norm_fro) ** 2
        passes = max(passes, out.passes + 1)
    ev = np.concatenate(vals)
    rr = np.concatenate(res)
    keep = ev >= cut
    order = np.argsort(ev[keep], kind="stable")
    return TopSpectrum(ev[keep][order], rr[keep][order], fro2, passes)


# ----------------------------------------------------------------------------- certificate
# Can a candidate xmin below the computed part of the spectrum beat the fit chosen inside it?
#
# For a candidate x below the smallest computed value lam_b, with n eigenvalues >= x (the k
# computed values y_1 >= ... >= y_k plus u = n - k unseen ones in [x, lam_b]) and exponent
# beta = alpha - 1 > 0, WeightWatcher's KS distance is D = max over the tail of
# |S(y) - rank(y)/n| with S(y) = (y/x)^-beta. Write s = S(lam_b) = (x/lam_b)^beta. Then:
#   (a) at the computed values: |s (y_r/lam_b)^-beta - r/n| <= D for r = 1..k;
#   (b) at each unseen tail value of rank r > k: s (y/lam_b)^-beta <= r/n + D, so
#       y >= lam_b (s/(r/n + D))^(1/beta), and y >= x >= 1e-5;
#   (c) the unseen values sum to at most R = ||W||_F^2 - sum(y) (all eigenvalues are >= 0),
#       so the lower bounds of (b) summed over r = k+1..n must stay <= R; n <= total;
#   (d) beta = n / sum_tail ln(y/x) <= total / sum_r ln(y_r/lam_b) (the computed values alone
#       contribute that much to the sum, x <= lam_b).
# D <= d is possible only if some (beta, s, n) satisfies all four. The (beta, s) quadrant is
# covered by boxes; in a box every exponential is bounded by its corners, (c) bounds n from
# above, and (a) becomes an interval for t = 1/n: a box where the intervals do not meet holds no
# such candidate. Boxes that may are split, a few levels deep. Relaxing never removes a true
# candidate, so "no box left" proves that every candidate below lam_b has D > d.
_BETA_EDGES = np.concatenate([[0.0], np.geomspace(0.02, 50.0, 49), [np.inf]])
_S_EDGES = np.concatenate([[0.0], np.geomspace(1e-8, 1.0, 49)])
_RANKS = 256            # computed values used in (a) (a subset only relaxes)
_SUM_BLOCKS = 64        # (c) summed in blocks of ranks, each at its smallest bound
_N_GRID = 48
_MAX_LEVELS = 6
_MAX_BOXES = 400        # more boxes left than this: the bound is too weak here, stop refining


def _rank_subset(k):
    if k <= _RANKS:
        return np.arange(1, k + 1)
    head = np.arange(1, 65)
    rest = np.geomspace(65, k, _RANKS - 64).round().astype(np.int64)
    return np.unique(np.concatenate([head, rest, [k]]))


def _boxes_possible(ba, bb, sa, sb, m, r, k, lam_b, total, R, d, eps, beta_cap=np.inf):
    """For boxes ``[ba, bb] x [sa, sb]`` of (beta, s): may a candidate in the box have D <= d?"""
    beyond = ba > beta_cap  # (d)
    bb = np.minimum(bb, beta_cap)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        g_lo = np.where(np.isinf(bb)[:, None], 0.0, np.exp(-bb[:, None] * (m[None, :] + 2 * eps)))
        g_hi = np.exp(-ba[:, None] * np.maximum(m[None, :] - 2 * eps, 0.0))
        rr = r[None, :].astype(np.float64)
        t_lo = np.max((sa[:, None] * g_lo - d) / rr, axis=1)  # (a) as bounds on t = 1/n
        t_hi = np.min((sb[:, None] * g_hi + d) / rr, axis=1)
        inv_ba = np.where(ba > 0, 1.0 / np.where(ba > 0, ba, 1.0), 0.0)
        # x = lam_b s^(1/beta) >= lam_b sa^(1/ba) (s < 1); beta near 0 allows any x >= 1e-5;
        # lam_b itself is known to within eps
        lam_lo = lam_b * (1 - eps)
        x_lo = np.maximum(np.where(ba > 0, lam_lo * sa ** inv_ba, 0.0), 1e-5)
        n_max = np.full(len(ba), float(total))
        grid = np.unique(np.geomspace(k + 1, total, _N_GRID).round().astype(np.int64))
        frac = np.linspace(0.0, 1.0, _SUM_BLOCKS + 1)[1:]
        for n in grid[::-1]:  # (c): the true sum grows with n, so the first n over R bounds all larger
            ends = np.unique(k + np.ceil(frac * (n - k)).astype(np.int64))
            cnt = np.diff(np.concatenate([[k], ends])).astype(np.float64)
            q = np.minimum(sa[:, None] / (ends[None, :] / n + d), 1.0)
            y_lo = np.maximum(x_lo[:, None], lam_lo * np.where(ba[:, None] > 0, q ** inv_ba[:, None], 0.0))
            over = np.nan_to_num(y_lo) @ cnt > R
            n_max = np.where(over, np.minimum(n_max, n - 1), n_max)
    t_lo = np.maximum(t_lo, 1.0 / np.maximum(n_max, 1.0))
    t_hi = np.minimum(t_hi, 1.0 / (k + 1))
    return (n_max >= k + 1) & (t_lo <= t_hi) & ~beyond


def no_better_fit_below(top_desc, total, fro2, d, eps):
    """True when it is proven that no candidate ``xmin`` below the smallest of ``top_desc`` (the
    largest eigenvalues, descending, every eigenvalue above the smallest of them included, each
    within relative ``eps``) has a KS distance ``<= d`` in WeightWatcher's fit of the whole
    spectrum (``total`` eigenvalues summing to ``fro2``). False: not proven (the candidates below
    may or may not fit better). See the comment above for the argument."""
    y = np.asarray(top_desc, dtype=np.float64)
    k = len(y)
    if k >= total or y[-1] <= 1e-5:  # nothing below, or nothing below that the fit would use
        return True
    lam_b = float(y[-1])
    R = fro2 * (1 + 1e-12) - (1 - eps) * float(np.sum(y))
    r = _rank_subset(k)
    m = np.log(y[r - 1] / lam_b)
    spread = float(np.sum(np.maximum(np.log(y / lam_b) - 2 * eps, 0.0)))
    beta_cap = total / spread if spread > 0 else np.inf
    BA, SA = np.meshgrid(_BETA_EDGES[:-1], _S_EDGES[:-1], indexing="ij")
    BB, SB = np.meshgrid(_BETA_EDGES[1:], _S_EDGES[1:], indexing="ij")
    boxes = [a.ravel() for a in (BA, BB, SA, SB)]
    for level in range(_MAX_LEVELS + 1):
        left = _boxes_possible(*boxes, m, r, k, lam_b, total, R, d, eps, beta_cap)
        if not left.any():
            return True
        if level == _MAX_LEVELS or np.count_nonzero(left) > _MAX_BOXES:
            return False
        ba, bb, sa, sb = (b[left] for b in boxes)
        bm = np.where(np.isinf(bb), np.where(ba > 0, 4 * ba, 1.0), np.where(ba > 0, np.sqrt(ba * bb), bb / 2))
        sm = np.where(sa > 0, np.sqrt(sa * sb), sb / 100)
        boxes = [np.concatenate(p) for p in ((ba, bm, ba, bm), (bm, bb, bm, bb), (sa, sa, sm, sm), (sm, sm, sb, sb))]
    return False

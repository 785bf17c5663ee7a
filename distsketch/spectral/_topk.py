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

__all__ = ["TopSpectrum", "top_spectrum"]


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

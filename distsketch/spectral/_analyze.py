"""Per-layer spectral metrics with WeightWatcher 0.7.7's definitions (see DESIGN.md section 7)."""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy import stats

from .._threads import blas_limit, current_blas_threads, other_blas_single_threaded, threads_per_worker
from ..errors import ParameterError
from ..random.streams import resolve_seed
from ._esd import singular_values_squared
from ._mp import mp_fit as _mp_fit
from ._powerlaw import EVALS_THRESH, SMALL_N, fit_clipped_power_law, fit_power_law
from ._sources import Layer, list_layers
from ._topk import no_better_fit_below, top_spectrum

__all__ = ["analyze", "summary", "SUMMARY_METRICS", "layer_matrices", "select_layers"]

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank",
                   "mp_softrank")
LAYER_TYPES = ("conv2d", "conv1d", "dense", "embedding", "norm")
WEAK_RANK_TOL = 1e-6
EPSILON = 1e-10
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0


# ----------------------------------------------------------------------------- matrices
def layer_matrices(layer: Layer, W: np.ndarray):
    """``(Wmats, N, M, rf, n_comp)`` as WeightWatcher extracts them (pooled conv2d, channels last).

    For conv2d (out, in, kh, kw): the kh*kw slices W[:, :, i, j], each transposed to be tall;
    N and M are swapped once per slice whose out < in (WeightWatcher's loop does so, so an even
    number of slices leaves them unswapped).
    """
    if layer.layer_type in ("dense", "conv1d", "embedding"):
        return [W], int(max(W.shape)), int(min(W.shape)), 1, int(min(W.shape))
    if layer.layer_type == "conv2d":
        N, M, imax, jmax = W.shape
        if N + M < imax + jmax:  # channels first: (kh, kw, in, out) layouts
            raise ParameterError(f"layer {layer.longname}: conv2d weight {W.shape} is not (out, in, kh, kw)")
        mats = []
        for i in range(imax):
            for j in range(jmax):
                Wij = W[:, :, i, j]
                if Wij.shape[0] < Wij.shape[1]:
                    N, M = M, N
                    Wij = Wij.T
                mats.append(Wij)
        rf = imax * jmax
        return mats, int(N), int(M), rf, int(M * rf)
    raise ParameterError(f"layer {layer.longname}: type {layer.layer_type} has no weight matrix")


def _dims(layer: Layer):
    """N, M, rf from the shape alone (for the size filters, before any weight is read)."""
    s = layer.shape
    if layer.layer_type in ("dense", "conv1d", "embedding") and len(s) >= 1:
        return max(s), min(s), 1
    if layer.layer_type == "conv2d" and len(s) == 4:
        N, M, imax, jmax = s
        rf = imax * jmax
        if N < M and rf % 2 == 1:
            N, M = M, N
        return N, M, rf
    return 0, 0, 1


def select_layers(layers, filters, min_evals, max_evals, max_N, large_layers="skip"):
    """WeightWatcher's filters (ids to keep or, negative, to skip; names, '-name' to skip; types)
    and size limits. Returns the kept layers and, for the others, the reason. With
    ``large_layers="randomized"`` layers over ``max_evals`` or ``max_N`` are kept."""
    if filters is None:
        filters = []
    elif not isinstance(filters, (list, tuple)):
        filters = [filters]
    types = [f for f in filters if isinstance(f, str) and f in LAYER_TYPES]
    ids = [int(f) for f in filters if isinstance(f, (int, np.integer)) and not isinstance(f, bool)]
    names = [f for f in filters if isinstance(f, str) and f not in LAYER_TYPES]
    bad = [f for f in filters if not isinstance(f, (str, int, np.integer)) or isinstance(f, bool)]
    if bad:
        raise ParameterError(f"layers: expected layer ids (int), names or types {LAYER_TYPES}; got {bad!r}")
    if ids and min(ids) < 0 < max(ids):
        raise ParameterError(f"layers: ids must all be >= 0 (keep) or all < 0 (skip); got {ids}")
    if names and 0 < sum(n.startswith("-") for n in names) < len(names):
        raise ParameterError(f"layers: names must all be kept or all be skipped ('-name'); got {names}")
    kept, skipped = [], []
    for L in layers:
        skip = False
        if types:
            skip = L.layer_type not in types
        if ids:
            skip = (L.layer_id not in ids) if min(ids) >= 0 else (-L.layer_id in ids)
        if names:
            skip = (L.name not in names) if not names[0].startswith("-") else (f"-{L.name}" in names)
        N, M, rf = _dims(L)
        if skip:
            skipped.append((L, "filtered out by layers="))
        elif L.layer_type in ("unknown", "norm") or not L.shape:
            skipped.append((L, f"layer type {L.layer_type} is not analysed"))
        elif min_evals and M * rf < min_evals:
            skipped.append((L, f"{M * rf} eigenvalues < min_evals={min_evals}"))
        elif max_evals and M * rf > max_evals and large_layers == "skip":
            skipped.append((L, f"{M * rf} eigenvalues > max_evals={max_evals}"))
        elif N > max_N and large_layers == "skip":
            skipped.append((L, f"N={N} > max_N={max_N}"))
        else:
            kept.append(L)
    return kept, skipped


# ----------------------------------------------------------------------------- metrics
def _rank(sv, N):
    tol = np.max(sv) * N * np.finfo(sv.dtype).eps
    return int(np.count_nonzero(sv > tol))


def _entropy(sv, N):
    rank = _rank(sv, N) + EPSILON
    ev = sv * sv
    p = ev / np.sum(ev) + EPSILON
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.sum(p * np.log(p)) / np.log(rank))


def _detX(evals):
    """WeightWatcher's detX constraint: on eigenvalues rescaled to mean 1, scanning down from the
    largest, the first ``idx`` where ``prod(evals[idx:]) < 1``; returns ``(n - idx, idx)``.

    The crossing is located with a cumulative sum of logs, then confirmed with the same
    ``np.prod`` WeightWatcher evaluates, starting a few steps above it."""
    n = len(evals)
    if n < 2 or not evals[0] < evals[-1]:
        return 0, 0
    scaled = (n / np.sum(evals)) * evals
    with np.errstate(divide="ignore"):
        logs = np.cumsum(np.log(scaled[::-1]))[: n - 1]  # logs[k]: log prod(scaled[n-1-k:])
    below = np.flatnonzero(logs < 1e-9)
    start = n - 1 if len(below) == 0 else min(n - 1, n - 1 - int(below[0]) + 3)
    for idx in range(start, 0, -1):
        if np.prod(scaled[idx:]) < 1.0:
            return n - idx, idx
    return n, 1


def _fit(evals, xmax, fix_fingers, n_all=None, evaluated=None):
    """WeightWatcher's fit_powerlaw: returns the fit columns and the fit status.

    ``n_all``: the layer's number of eigenvalues when ``evals`` is only its top (for the rule
    that ``xmax=-k`` with ``k`` over half of them fails). ``evaluated``: a list that receives
    ``(dropped, fit)`` for every power-law fit made, ``dropped`` the number of largest values left
    out beyond ``xmax``'s (several with ``clip_xmax``)."""
    cols = {"alpha": -1.0, "xmin": -1.0, "xmax": np.nan, "D": -1.0, "sigma": -1.0, "num_pl_spikes": -1}
    extra = {}
    status = "success"
    if isinstance(xmax, (int, np.integer)) and not isinstance(xmax, bool):
        k = abs(int(xmax))
        if k > (len(evals) if n_all is None else n_all) / 2:
            status = "failed"
        elif k:
            evals = evals[:-k]
    nz = evals[evals > EVALS_THRESH]
    fit = None
    if status != "failed":
        try:
            if fix_fingers == "clip_xmax":
                fit, nf, first = fit_clipped_power_law(nz, evaluated=evaluated)
                extra = {"num_fingers": nf, "raw_alpha": first.alpha}
            else:
                fit = fit_power_law(nz)
                if evaluated is not None:
                    evaluated.append((0, fit))
        except ValueError as e:
            log.warning("power-law fit failed: %s", e)
            status = "failed"
    if fix_fingers == "clip_xmax" and not extra:
        extra = {"num_fingers": 0, "raw_alpha": -1.0}
    if fit is None or np.isnan(fit.alpha):
        status = "failed"
    if status != "failed":
        cols = {"alpha": fit.alpha, "xmin": fit.xmin, "xmax": fit.xmax, "D": fit.D, "sigma": fit.sigma,
                "num_pl_spikes": int(np.count_nonzero(evals >= fit.xmin))}
    return cols, extra, status


def _random_evals(Wmats, n_comp, replicas, rng):
    """Spectra of ``replicas`` element-shuffled copies of the layer (each slice shuffled on its
    own, as WeightWatcher does); one sorted array per replica."""
    out = []
    for _ in range(replicas):
        shuffled = []
        for W in Wmats:
            flat = W.ravel().copy()
            rng.shuffle(flat)
            shuffled.append(flat.reshape(W.shape))
        out.append(np.sort(np.concatenate([ev[-n_comp:] for ev in singular_values_squared(shuffled)[0]])))
    return out


def _checked_matrices(layer: Layer, W):
    """:func:`layer_matrices` after the checks both eigenvalue paths need, with WeightWatcher's
    conv2d normalisation applied."""
    if not np.all(np.isfinite(W)):
        bad = int(np.size(W) - np.count_nonzero(np.isfinite(W)))
        raise ParameterError(f"layer {layer.longname}: weight has {bad} non-finite entries (NaN or inf)")
    if layer.layer_type == "conv1d" and W.ndim != 2:
        raise ParameterError(f"layer {layer.longname}: conv1d weight of shape {W.shape} is not a matrix "
                             "(WeightWatcher cannot analyse it either)")
    Wmats, N, M, rf, n_comp = layer_matrices(layer, W)
    if layer.layer_type == "conv2d":
        Wmats = [Wm * np.sqrt(1 / 2.0) for Wm in Wmats]  # conv2d_norm with pooled slices (count 1)
    return Wmats, N, M, rf, n_comp


def _row_head(layer: Layer, N, M, rf):
    return {"layer_id": layer.layer_id, "name": layer.name, "longname": layer.longname,
            "layer_type": layer.layer_type, "N": N, "M": M, "rf": rf, "Q": N / M if M > 0 else -1, "has_esd": True}


def _fit_columns(fitcols, extra, status):
    alpha = fitcols["alpha"]
    warning = "over-trained" if alpha < OVER_TRAINED else ("under-trained" if alpha > UNDER_TRAINED else "")
    return {**fitcols, **extra, "status": status, "warning": warning}


def _norm_columns(alpha, norm, spectral, log_alpha_norm):
    """The columns from the sum and the largest of the eigenvalues (and log_alpha_norm)."""
    return {"norm": norm, "log_norm": float(np.log10(norm)), "spectral_norm": spectral,
            "log_spectral_norm": float(np.log10(spectral)), "alpha_weighted": alpha * float(np.log10(spectral)),
            "log_alpha_norm": log_alpha_norm, "stable_rank": norm / spectral}


def analyze_layer(layer: Layer, W, *, mp_fit=False, randomize=False, detX=False, fix_fingers=None, xmax=None,
                  rng=None, eig_method="auto"):
    """One row of the details table for ``layer`` with weight ``W`` (already read)."""
    t0 = time.perf_counter()
    Wmats, N, M, rf, n_comp = _checked_matrices(layer, W)
    per, method = singular_values_squared(Wmats, eig_method)
    per = [e[-n_comp:] for e in per]
    svs = [np.sqrt(e) for e in per]
    evals = np.sort(np.concatenate(per))
    sv_max = max(float(np.max(s)) for s in svs)
    sv_min = max(float(np.min(s)) for s in svs)
    rank_loss = sum(len(s) - _rank(s, N) for s in svs)
    row = _row_head(layer, N, M, rf)
    row.update({"num_evals": len(evals), "sv_max": sv_max, "sv_min": sv_min, "rank_loss": rank_loss,
                "weak_rank_loss": int(np.count_nonzero(evals < WEAK_RANK_TOL)), "lambda_max": float(np.max(evals))})
    fitcols, extra, status = _fit(evals, xmax, fix_fingers)
    row.update(_fit_columns(fitcols, extra, status))
    alpha = row["alpha"]
    if mp_fit:
        row.update(dict(zip(("num_spikes", "sigma_mp", "mp_softrank", "bulk_min", "bulk_max", "W_scale"),
                            _safe_mp(evals, N, M))))
    if randomize:
        # WeightWatcher draws 5 shuffles (1 when n_comp >= 100) for the trap statistics and one
        # more for rand_distance; the first of the former serves here as the latter (each column
        # has the same distribution, and the layer's most expensive step is not repeated)
        reps = _random_evals(Wmats, n_comp, 5 if n_comp < 100 else 1, rng)
        rand, rand1 = np.sort(np.concatenate(reps)), reps[0]
        row["max_rand_eval"] = float(np.max(rand))
        row["rand_distance"] = float(np.sqrt((stats.entropy(evals, (evals + rand1) / 2)
                                              + stats.entropy(rand1, (evals + rand1) / 2)) / 2))
        row["ww_softrank"] = float(np.max(rand1) / np.max(evals))
        row["ww_maxdist"] = float(np.max(evals) - np.max(rand1))
        ns, smp, sr, bmin, bmax, ws = _safe_mp(rand, N, M)
        row.update({"rand_num_spikes": ns, "num_traps": ns, "rand_sigma_mp": smp, "rand_mp_softrank": sr,
                    "rand_W_scale": ws, "rand_bulk_max": bmax, "rand_bulk_min": bmin})
    if detX:
        num, idx = _detX(evals)
        scaled = (len(evals) / np.sum(evals)) * evals
        row.update({"detX_num": num, "num_ERG_spikes": num,
                    "ERG_gap": num - row["num_pl_spikes"], "detX_val": float(scaled[idx] / (len(evals) / np.sum(evals))),
                    "detX_val_unrescaled": float(scaled[idx])})
    sv_all = np.sqrt(evals)
    row.update(_norm_columns(alpha, float(np.sum(evals)), float(np.max(evals)),
                             float(np.log10(np.sum(evals ** alpha)))))
    row.update({"matrix_rank": _rank(sv_all, N), "entropy": _entropy(sv_all, N)})
    row["eig_method"] = method
    row["seconds"] = time.perf_counter() - t0
    return row, evals


def analyze_layer_topk(layer: Layer, W, *, k=256, k_max=None, rtol=1e-4, n_iter=3, fix_fingers=None, xmax=None,
                       seed=0):
    """One row for a layer too large for a full eigendecomposition: the power law fitted to the
    top of the spectrum (:mod:`._topk`). The KS search runs over the computed top; ``k`` is
    doubled (up to ``k_max``, default ``min(M // 2, 8 k)``) until the fit is certified to be the
    one the whole spectrum gives: ``topk_converged`` is True only when

    - the tail's eigenvalues (those alpha, D and sigma are computed from) are accurate to
      ``rtol`` (``topk_error``, the tail's largest estimated relative error, :func:`_topk_errors`),
      and
    - every candidate ``xmin`` below the accurately computed values is proven to have a larger
      KS distance than the chosen one (:func:`._topk.no_better_fit_below`: from the computed
      values, the number of eigenvalues and their sum ``||W||_F^2``), for every fit made
      (``clip_xmax`` makes several), or the whole spectrum was computed.

    A tail that ends at a gap (spikes over a bulk) fits the computed top well, but the whole
    spectrum's fit may start inside the bulk: that cannot be proven from the top alone, so such a
    layer reports ``topk_converged=False`` unless ``k`` reaches far enough into the bulk. The
    proof takes the Ritz values within their error estimates as the layer's largest eigenvalues
    (block Krylov from a random start; no residual proves that none was skipped).
    Sums over all eigenvalues come from ``||W||_F^2`` (log_norm, stable_rank: exact); metrics
    that need the whole spectrum (entropy, matrix_rank, sv_min, rank losses, log_alpha_norm, and
    the mp_fit/randomize/detX columns) are NaN."""
    t0 = time.perf_counter()
    Wmats, N, M, rf, _ = _checked_matrices(layer, W)
    Wmats = [np.asarray(Wm, dtype=np.float64) for Wm in Wmats]  # once, not in every doubling round
    m = max(min(Wm.shape) for Wm in Wmats)  # eigenvalues per slice (WeightWatcher's M may be swapped)
    total = sum(min(Wm.shape) for Wm in Wmats)
    k_max = int(k_max) if k_max else max(k, min(m // 2, 8 * k))
    k = min(int(k), k_max)
    passes, prev_top = 0, None
    while True:
        top = top_spectrum(Wmats, k, n_iter=n_iter, seed=seed)
        passes += top.passes
        err = _topk_errors(top, prev_top)
        evals = top.evals
        complete = len(evals) == total
        fits = []
        fitcols, extra, status = _fit(evals, xmax, fix_fingers, n_all=total, evaluated=fits)
        ok = status != "failed"
        tail = evals >= fitcols["xmin"] if ok else np.ones(len(evals), bool)
        tail_err = float(np.max(err[tail])) if np.any(tail) else float("inf")
        converged = bool(ok and tail_err <= rtol
                         and (complete or _topk_certified(evals, err, rtol, xmax, fits, total, top.fro2)))
        if converged or complete or k >= k_max:
            break
        prev_top = top
        k = min(2 * k, k_max)
    spectral = float(evals[-1])
    nan = float("nan")
    row = _row_head(layer, N, M, rf)
    row.update({"num_evals": total, "sv_max": float(np.sqrt(spectral)), "sv_min": nan, "rank_loss": nan,
                "weak_rank_loss": nan, "lambda_max": spectral})
    row.update(_fit_columns(fitcols, extra, status))
    row.update(_norm_columns(fitcols["alpha"], top.fro2, spectral, nan))
    row.update({"matrix_rank": nan, "entropy": nan, "eig_method": "topk",
                "topk": len(evals), "topk_converged": converged, "topk_error": tail_err, "passes": passes})
    row["seconds"] = time.perf_counter() - t0
    return row, evals


def _topk_certified(evals, err, rtol, xmax, fits, total, fro2):
    """Whether each power-law fit in ``fits`` (``(dropped, fit)`` from :func:`_fit` on the
    computed top ``evals``, ascending, with estimated relative errors ``err``) is the fit the
    whole spectrum would give: its tail lies within the values accurate to ``rtol`` (the
    largest ones, contiguous), the small-sample rule of the fit did not apply to the top where
    it would not to the whole, and no candidate below the accurate values can have a smaller or
    equal KS distance (:func:`._topk.no_better_fit_below`)."""
    desc, e = evals[::-1], err[::-1]
    bad = np.flatnonzero(~(e <= rtol))
    acc = desc[: int(bad[0]) if len(bad) else len(desc)]
    if not len(fits) or not len(acc):
        return False
    drop_x = abs(int(xmax)) if isinstance(xmax, (int, np.integer)) and not isinstance(xmax, bool) else 0
    eps = max(float(np.max(e[: len(acc)])), 1e-15)
    for dropped, fit in fits:
        d = drop_x + dropped
        y = acc[d:]
        if not len(y) or fit.xmin < y[-1] or np.count_nonzero(desc[d:] > EVALS_THRESH) < SMALL_N:
            return False
        # the chosen D is itself computed from values with relative errors <= eps: a KS deviation
        # moves by at most about 3 (alpha - 1) eps, so candidates below must beat D plus that
        margin = 4.0 * max(fit.alpha, 1.0) * eps
        if not no_better_fit_below(y, total - d, fro2 - float(np.sum(acc[:d])), fit.D + margin, eps):
            return False
    return True


def _topk_errors(top, prev):
    """Estimated relative error of each Ritz value of ``top`` (ascending): the smaller of its
    relative residual (Bauer-Fike: rigorous) and, where an earlier, smaller run computed the
    same rank from the top, the change since then (what iterative eigensolvers judge by)."""
    err = np.array(top.rel_residual, dtype=np.float64)
    if prev is not None:
        n = min(len(prev.evals), len(top.evals))
        if n:
            new, old = top.evals[::-1][:n], prev.evals[::-1][:n]
            with np.errstate(divide="ignore", invalid="ignore"):
                change = np.abs(new - old) / new
            err[::-1][:n] = np.fmin(err[::-1][:n], change)
    return err


_MAX_THREADS = 8  # layers in flight at once by default (each holds its weight and Gram matrix)


def _safe_mp(evals, N, M):
    try:
        return _mp_fit(evals, N, M)
    except (ValueError, RuntimeError, FloatingPointError) as e:
        log.warning("MP fit failed: %s", e)
        return -1, -1.0, -1.0, -1.0, -1.0, -1.0


# ----------------------------------------------------------------------------- public
def analyze(source, *, min_evals=8, max_evals=15000, max_N=50000, layers=None, mp_fit=False, randomize=False,
            detX=False, fix_fingers=None, xmax=None, seed=None, return_evals=False, eig_method="auto",
            large_layers="skip", topk=256, topk_max=None, topk_rtol=1e-4, threads=None):
    """WeightWatcher-compatible spectral metrics of every weight matrix in ``source``.

    Parameters
    ----------
    source : str or path, dict, or module
        A safetensors file or a folder of shards, a PyTorch state-dict file (.pt/.bin/.pth, loaded
        with ``weights_only=True``), an .npz, a dict of arrays (state-dict conventions), or a torch
        ``nn.Module`` (or any object with ``named_modules()``; module conventions). See
        :mod:`distsketch.spectral._sources` for how layer ids, names and types are assigned.
    min_evals, max_evals, max_N : int
        WeightWatcher's size limits: layers with fewer than ``min_evals`` or more than
        ``max_evals`` eigenvalues (M * rf), or with N > ``max_N``, are skipped.
    layers : list, optional
        Ids to keep (or, all negative, to skip), names to keep (or '-name' to skip), or types.
    mp_fit : bool
        Marchenko-Pastur bulk fit: num_spikes, sigma_mp, mp_softrank, bulk_min, bulk_max, W_scale.
    randomize : bool
        Correlation traps: spectra of element-shuffled copies (seeded; WeightWatcher's are not;
        it shuffles once more for rand_distance, here the first shuffle serves both):
        max_rand_eval, rand_distance, ww_softrank, ww_maxdist and the MP fit of the shuffled
        spectrum (rand_num_spikes = num_traps, ...).
    detX : bool
        detX_num, num_ERG_spikes, ERG_gap, detX_val, detX_val_unrescaled.
    fix_fingers : None or "clip_xmax"
        Clip up to 9 of the largest eigenvalues while alpha drops (num_fingers, raw_alpha).
    xmax : None or int
        A negative int -k leaves the k largest eigenvalues out of the fit (WeightWatcher's rule).
    seed : int, optional
        Seeds the shuffles of ``randomize``; ``None`` draws fresh entropy, recorded in
        ``df.attrs["seed"]``.
    return_evals : bool
        Also return ``{layer_id: eigenvalues}``.
    eig_method : {"auto", "gram", "svd"}
        How full spectra are computed (see :mod:`._esd`); ``svd`` is WeightWatcher's own path.
    large_layers : {"skip", "randomized"}
        ``skip`` (WeightWatcher): layers over ``max_evals`` or ``max_N`` are left out.
        ``randomized``: they are analysed; those over ``max_evals`` by the top-``k`` path
        (:func:`analyze_layer_topk`: ``k`` from ``topk``, doubled up to ``topk_max``,
        default ``min(M // 2, 8 * topk)``, until its tail eigenvalues are accurate to
        ``topk_rtol`` and no ``xmin`` below the computed part is proven able to fit better
        (then ``topk_converged`` is True; a tail ending at a gap above a bulk usually cannot be
        proven and is reported False); columns ``topk``, ``topk_converged``, ``topk_error``,
        ``passes``), those over ``max_N`` only by the exact path.
    threads : int, optional
        Layers analysed at once, each with one BLAS thread; default: the BLAS threads allowed
        here, at most 8 (so 1 inside a zoo task that was given one core). Results agree across
        settings to rounding (BLAS blocking differs with the thread count).

    Returns
    -------
    pandas.DataFrame
        One row per analysed matrix, WeightWatcher's columns plus ``eig_method`` and ``seconds``;
        ``df.attrs`` holds the options, the seed and the skipped layers with reasons.
    """
    import pandas as pd

    if fix_fingers not in (None, False, "clip_xmax"):
        raise ParameterError(f"fix_fingers: expected None or 'clip_xmax'; got {fix_fingers!r} ('xmin_peak' "
                             "needs the powerlaw package in WeightWatcher and is not supported)")
    if xmax is not None and not (isinstance(xmax, (int, np.integer)) and not isinstance(xmax, bool)):
        raise ParameterError(f"xmax: expected None or an int (-k drops the k largest eigenvalues); got {xmax!r}")
    for name, v in (("min_evals", min_evals), ("max_evals", max_evals), ("max_N", max_N)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ParameterError(f"{name}: expected a non-negative int; got {v!r}")
    if eig_method not in ("auto", "gram", "svd"):
        raise ParameterError(f"eig_method: expected 'auto', 'gram' or 'svd'; got {eig_method!r}")
    if large_layers not in ("skip", "randomized"):
        raise ParameterError(f"large_layers: expected 'skip' or 'randomized'; got {large_layers!r}")
    for name, v in (("topk", topk), ("topk_max", topk_max)):
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
            raise ParameterError(f"{name}: expected a positive int; got {v!r}")
    if topk is None:
        raise ParameterError("topk: expected a positive int; got None")
    if threads is not None and (not isinstance(threads, (int, np.integer)) or isinstance(threads, bool)
                                or threads < 1):
        raise ParameterError(f"threads: expected None or a positive int; got {threads!r}")
    if not (isinstance(topk_rtol, (float, int)) and 0 < topk_rtol < 1):
        raise ParameterError(f"topk_rtol: expected a float in (0, 1); got {topk_rtol!r}")
    seed = resolve_seed(seed)
    all_layers = list_layers(source)
    kept, skipped = select_layers(all_layers, layers, min_evals, max_evals, max_N, large_layers)
    def one(L):
        W = L.load()
        if not np.any(W):
            return None  # nothing to fit: skipped with the reason below
        ss = np.random.SeedSequence(seed, spawn_key=(int(L.layer_id),))
        _, M, rf = _dims(L)
        if max_evals and M * rf > max_evals:  # only kept with large_layers="randomized"
            return analyze_layer_topk(L, W, k=topk, k_max=topk_max, rtol=topk_rtol,
                                      fix_fingers=fix_fingers or None, xmax=xmax, seed=ss)
        return analyze_layer(L, W, mp_fit=mp_fit, randomize=randomize, detX=detX, fix_fingers=fix_fingers or None,
                             xmax=xmax, rng=np.random.default_rng(ss), eig_method=eig_method)

    threads = min(current_blas_threads(), _MAX_THREADS) if threads is None else int(threads)
    if threads > 1 and len(kept) > 1:
        # layers in parallel threads, sharing the BLAS threads (workers x BLAS threads <= threads):
        # numpy's BLAS/LAPACK calls release the GIL, and two single-threaded eigensolvers outrun
        # one two-threaded (memory-bound) one
        from concurrent.futures import ThreadPoolExecutor

        workers = min(threads, len(kept))
        with blas_limit(threads_per_worker(workers, cores=threads)), ThreadPoolExecutor(workers) as ex:
            futures = [ex.submit(one, L) for L in kept]
            try:
                results = [f.result() for f in futures]
            except BaseException:
                ex.shutdown(wait=True, cancel_futures=True)  # do not analyse the rest for nothing
                raise
    else:
        with other_blas_single_threaded():
            results = [one(L) for L in kept]
    skipped += [(L, "all-zero weight (no spectrum)") for L, r in zip(kept, results) if r is None]
    done = [(L, r) for L, r in zip(kept, results) if r is not None]
    rows = [r for _, (r, _) in done]
    spectra = {L.layer_id: ev for L, (_, ev) in done} if return_evals else {}
    df = pd.DataFrame(rows)
    if "topk_converged" in df:  # NaN on exactly analysed layers: keep a (nullable) boolean column
        df["topk_converged"] = df["topk_converged"].astype("boolean")
    df.attrs.update({"seed": seed, "skipped": [(L.layer_id, L.longname, why) for L, why in skipped],
                     "options": dict(min_evals=min_evals, max_evals=max_evals, max_N=max_N, mp_fit=mp_fit,
                                     randomize=randomize, detX=detX, fix_fingers=fix_fingers, xmax=xmax,
                                     large_layers=large_layers, topk=topk, topk_max=topk_max,
                                     topk_rtol=topk_rtol)})
    return (df, spectra) if return_evals else df


def summary(df):
    """WeightWatcher's model summary: the unweighted mean over layers of each summary metric
    present (failed fits, alpha = -1, included as WeightWatcher includes them)."""
    return {m: float(df[m].mean()) for m in SUMMARY_METRICS if m in getattr(df, "columns", ())}

"""distsketch.spectral._topk: the top-k path for large layers against the full spectrum, and its
certificate never wrong."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.errors import ParameterError  # noqa: E402
from distsketch.spectral import analyze, fit_power_law  # noqa: E402

from ._spectral_ww import _Module, _Model, _with_spectrum  # noqa: E402


def test_topk_path_for_large_layers_matches_full_spectrum():
    rng = np.random.default_rng(5)
    big = _with_spectrum(rng, 1500, 1000, 2.0 * (rng.pareto(1.5, 40) + 1.0))  # a tail apart from the bulk
    src = {"big.weight": big, "small.weight": rng.standard_normal((300, 100))}
    full = analyze(src).set_index("name")
    skipped = analyze(src, max_evals=500)
    assert list(skipped["name"]) == ["small"] and "max_evals=500" in skipped.attrs["skipped"][0][2]
    # k capped at 128 of 1000: the fit inside the computed top has the full fit's numbers, but
    # that no xmin in the unseen bulk fits better cannot be proven from the top: not converged
    top = analyze(src, max_evals=500, large_layers="randomized", topk=32, topk_max=128, seed=3).set_index("name")
    row = top.loc["big"]
    assert row["eig_method"] == "topk" and not bool(row["topk_converged"])
    assert 2 * row["num_pl_spikes"] <= row["topk"] < 1000 and row["topk_error"] <= 1e-4
    assert row["num_evals"] == 1000 and row["passes"] >= 6
    # candidates inside the computed top give the full fit's numbers; sums come from ||W||_F^2
    assert row["num_pl_spikes"] == full.loc["big", "num_pl_spikes"]
    for c in ("alpha", "xmin", "D", "sigma", "lambda_max", "alpha_weighted", "stable_rank"):
        np.testing.assert_allclose(row[c], full.loc["big", c], rtol=1e-4, err_msg=c)
    np.testing.assert_allclose(row["log_norm"], full.loc["big", "log_norm"], rtol=1e-12)
    assert np.isnan(row["entropy"]) and np.isnan(row["matrix_rank"]) and np.isnan(row["log_alpha_norm"])
    assert top.loc["small", "eig_method"] in ("gram", "gram+inverse")
    np.testing.assert_allclose(top.loc["small", "alpha"], full.loc["small", "alpha"], rtol=1e-12)
    # a tail running into a flat bulk cannot be resolved by a few Krylov steps: the doubling ends
    # with the whole spectrum, and the fit is the full one
    flat = {"big.weight": _with_spectrum(rng, 1500, 1000, rng.pareto(2.5, 40) + 1.0)}
    f_top = analyze(flat, max_evals=500, large_layers="randomized", topk=32, seed=3).iloc[0]
    f_full = analyze(flat).iloc[0]
    assert bool(f_top["topk_converged"]) and f_top["topk"] == 1000
    np.testing.assert_allclose(f_top["alpha"], f_full["alpha"], rtol=1e-9)
    with pytest.raises(ParameterError, match="large_layers"):
        analyze(src, large_layers="approx")
    with pytest.raises(ParameterError, match="topk"):
        analyze(src, large_layers="randomized", topk=0)


def test_topk_spikes_over_a_bulk_are_not_a_converged_tail():
    # issue 11 item 5, scaled down: a Gaussian layer with 20 spikes. The top-k fit settles on the
    # spikes (a gap below them); the whole spectrum's fit starts deep in the bulk. Before: reported
    # topk_converged=True with alpha and the tail far from the exact ones.
    rng = np.random.default_rng(11)
    n, m = 1600, 800
    U, _ = np.linalg.qr(rng.standard_normal((n, 20)))
    V, _ = np.linalg.qr(rng.standard_normal((m, 20)))
    W = rng.standard_normal((n, m)) / np.sqrt(n) + (U * np.linspace(3, 10, 20)) @ V.T
    src = {"big.weight": W}
    exact = analyze(src).iloc[0]
    top = analyze(src, max_evals=400, large_layers="randomized", topk=32, topk_max=64, seed=0).iloc[0]
    assert top["topk"] < 800 and top["num_pl_spikes"] < exact["num_pl_spikes"] / 4  # the wrong fit ...
    assert abs(top["alpha"] - exact["alpha"]) > 0.5
    assert not bool(top["topk_converged"])  # ... is not called converged
    # with the default cap (256) the doubling reaches the whole spectrum: converged, the exact fit
    whole = analyze(src, max_evals=400, large_layers="randomized", topk=128, seed=0).iloc[0]
    assert bool(whole["topk_converged"]) and whole["topk"] == 800
    for c in ("alpha", "xmin", "D", "num_pl_spikes"):
        np.testing.assert_allclose(whole[c], exact[c], rtol=1e-9, err_msg=c)


def _spectra_for_certificate(rng):
    def mp(M, Q):
        X = rng.standard_normal((int(Q * M), M)) / np.sqrt(Q * M)
        return np.linalg.eigvalsh(X.T @ X)
    return {  # each a spectrum of 1000 eigenvalues
        "uniform bulk + pareto tail": np.concatenate([rng.uniform(0.05, 1.0, 960), 2 * (rng.pareto(1.5, 40) + 1)]),
        "MP bulk + pareto tail": np.concatenate([mp(960, 1.0), 5 * (rng.pareto(1.5, 40) + 1)]),
        "MP bulk + spikes": np.concatenate([mp(970, 4.0), np.linspace(3, 50, 30)]),
        "exponential bulk + tail": np.concatenate([rng.exponential(0.1, 960), 2 * (rng.pareto(2.0, 40) + 1)]),
        "pure power law": 0.01 * (rng.pareto(2.5, 1000) + 1),
        "tiny bulk + tail": np.concatenate([rng.uniform(0, 1e-3, 960), 2 * (rng.pareto(1.5, 40) + 1)]),
        "flat bulk + tail": np.concatenate([np.ones(960), 2 * (rng.pareto(1.5, 40) + 1)]),
    }


def test_topk_certificate_is_never_wrong():
    """no_better_fit_below(top, ...) True must mean: the fit of the top is the fit of the whole
    (checked against the fit of every eigenvalue). It must also prove something somewhere."""
    from distsketch.spectral._topk import no_better_fit_below

    proven = set()
    for name, ev in _spectra_for_certificate(np.random.default_rng(12)).items():
        ev = np.sort(ev)
        whole = fit_power_law(ev[ev > 1e-5])
        for k in (64, 256, 512):
            top = ev[-k:]
            fit = fit_power_law(top[top > 1e-5])
            if no_better_fit_below(top[::-1], len(ev), float(np.sum(ev)), fit.D, 1e-12):
                proven.add((name, k))
                assert (fit.alpha, fit.xmin) == (whole.alpha, whole.xmin), (name, k)
    # proven where the bulk cannot hold a power law: half the spectrum computed, or a flat bulk
    assert {("uniform bulk + pareto tail", 512), ("flat bulk + tail", 256)} <= proven, proven
    assert no_better_fit_below(np.array([3.0, 2.0]), 2, 5.0, 0.1, 1e-12)  # nothing below


def test_topk_path_pools_conv2d_slices():
    rng = np.random.default_rng(6)
    Wc = rng.standard_normal((600, 400, 2, 2)) / 25
    for a in range(2):
        for b in range(2):  # a few strong directions per slice, of different strength
            Wc[:, :, a, b] += (rng.standard_normal((600, 3)) * (1 + a + 2 * b)) @ rng.standard_normal((3, 400)) / 20
    modules = _Model([("", type("Net", (_Module,), {})()), ("conv", type("Conv2d", (_Module,), {})(Wc))])
    full = analyze(modules, return_evals=True)
    top = analyze(modules, max_evals=1000, large_layers="randomized", topk=32, topk_max=32, seed=0,
                  return_evals=True)
    row, frow = top[0].iloc[0], full[0].iloc[0]
    assert row["eig_method"] == "topk" and row["num_evals"] == frow["num_evals"] == 1600
    ev_top, ev_full = top[1][row["layer_id"]], full[1][frow["layer_id"]]
    # 32 per slice computed; the pool is cut at the largest slice's 32nd value, and nothing of the
    # full spectrum above that cut is missing (Ritz values are lower bounds, rough near the cut)
    assert 32 <= len(ev_top) < 128
    cut = ev_top[0]
    assert np.count_nonzero(ev_full >= cut) >= len(ev_top) >= np.count_nonzero(ev_full >= 1.05 * cut)
    np.testing.assert_allclose(ev_top[-12:], ev_full[-12:], rtol=1e-6)  # the planted directions
    np.testing.assert_allclose(row["lambda_max"], frow["lambda_max"], rtol=1e-9)
    np.testing.assert_allclose(row["log_norm"], frow["log_norm"], rtol=1e-12)

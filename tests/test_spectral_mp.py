"""distsketch.spectral._mp: randomize (seeded shuffles, against WeightWatcher statistically and LAPACK)
and correlation traps found where planted."""

import os

import numpy as np
import pytest
import scipy.linalg as sla

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.spectral import analyze  # noqa: E402

from ._spectral_ww import DATA, module_model, reference, assert_matches  # noqa: E402


def test_randomize_is_seeded_and_matches_weightwatcher_statistically():
    ref = reference("mixed", "randomize")
    a = analyze(module_model("mixed"), randomize=True, mp_fit=True, seed=7)
    b = analyze(module_model("mixed"), randomize=True, mp_fit=True, seed=7)
    c = analyze(module_model("mixed"), randomize=True, mp_fit=True, seed=8)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert not np.allclose(a["max_rand_eval"], c["max_rand_eval"])
    assert_matches(a, ref.drop(columns=[k for k in ref.columns if "rand" in k or k in ("num_traps", "ww_softrank",
                                                                                         "ww_maxdist")]))
    # shuffled spectra are random: WeightWatcher's (unseeded) and ours agree as samples do
    np.testing.assert_allclose(a["max_rand_eval"], ref["max_rand_eval"], rtol=0.3)
    np.testing.assert_allclose(a["rand_distance"], ref["rand_distance"], rtol=0.9, atol=0.05)


def test_randomized_spectrum_against_lapack():
    """max_rand_eval is the top squared singular value (LAPACK gesdd) of the seeded shuffle."""
    W = np.random.default_rng(0).standard_normal((150, 120)).astype(np.float32)
    df = analyze({"fc.weight": W}, randomize=True, seed=11)
    rng = np.random.default_rng(np.random.SeedSequence(int(df.attrs["seed"]), spawn_key=(1,)))
    flat = W.astype(np.float64).ravel().copy()
    rng.shuffle(flat)
    ref = sla.svd(flat.reshape(W.shape), compute_uv=False)[0] ** 2
    np.testing.assert_allclose(df["max_rand_eval"].iloc[0], ref, rtol=1e-10)


def test_correlation_traps_found_where_planted():
    df = analyze(os.path.join(DATA, "traps.safetensors"), randomize=True, mp_fit=True, seed=3).set_index("name")
    assert df.loc["1", "num_traps"] >= 1      # W[7, 11] = 40 planted in the second layer
    assert df.loc["0", "num_traps"] == 0
    rng = np.random.default_rng(4)
    for trial in range(3):
        W = rng.standard_normal((300, 200)) / np.sqrt(200)
        clean = analyze({"w.weight": W}, randomize=True, seed=trial)
        W[rng.integers(300), rng.integers(200)] = 30.0
        trapped = analyze({"w.weight": W}, randomize=True, seed=trial)
        assert clean["num_traps"].iloc[0] == 0 and trapped["num_traps"].iloc[0] >= 1

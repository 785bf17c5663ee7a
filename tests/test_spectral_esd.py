"""distsketch.spectral._esd: the eigenvalue paths (Gram + LAPACK, inverse iteration, SVD, two-stage
dsyevd) against LAPACK's SVD and against each other."""

import numpy as np
import pytest
import scipy.linalg as sla

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from distsketch.spectral import analyze  # noqa: E402

from ._spectral_ww import EXACT_1E9, INTS, _with_spectrum  # noqa: E402


def test_eigen_paths_agree_and_small_singular_values_are_exact():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((120, 40)).astype(np.float32)
    g = analyze({"a.weight": W}, eig_method="gram")
    s = analyze({"a.weight": W}, eig_method="svd")
    for c in ("alpha", "xmin", "D", "log_norm", "log_alpha_norm", "entropy", "stable_rank"):
        np.testing.assert_allclose(g[c], s[c], rtol=1e-9)
    # rank deficient (tall and square): the rank and the smallest values as LAPACK has them
    for shape in ((120, 40), (60, 60)):
        low = rng.standard_normal((shape[0], 5)) @ rng.standard_normal((5, shape[1]))
        auto = analyze({"a.weight": low})
        assert auto["eig_method"].iloc[0] in ("gram+inverse", "svd")
        assert auto["matrix_rank"].iloc[0] == np.linalg.matrix_rank(low) == 5
    # an exactly singular square factor (a zero row) falls back to the SVD
    Z = rng.standard_normal((50, 50))
    Z[7] = 0.0
    z = analyze({"a.weight": Z})
    assert z["eig_method"].iloc[0] == "svd" and z["matrix_rank"].iloc[0] == 49
    # ill-conditioned, full rank: the smallest singular values refined without a full SVD
    for shape in ((300, 300), (400, 300)):
        U, _ = np.linalg.qr(rng.standard_normal((shape[0], shape[1])))
        V, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
        sv = np.concatenate([np.logspace(0, -2.2, shape[1] - 3), [1e-6, 3e-7, 1e-7]])
        A = (U * sv) @ V.T
        df, ev = analyze({"a.weight": A}, return_evals=True)
        ref = sla.svd(A, compute_uv=False)
        assert df["eig_method"].iloc[0] == "gram+inverse"
        np.testing.assert_allclose(df["sv_min"].iloc[0], ref[-1], rtol=1e-8)
        e = ev[df["layer_id"].iloc[0]]
        np.testing.assert_allclose(np.sqrt(e[:2]), ref[::-1][:2], rtol=1e-8)  # below 1e-12 lambda_max: refined
        assert np.max(np.abs(e - ref[::-1] ** 2)) <= 1e3 * np.finfo(float).eps * ref[0] ** 2  # the rest: Gram
        assert df["matrix_rank"].iloc[0] == np.linalg.matrix_rank(A)


@pytest.mark.parametrize("n", [3, 65, 300])
def test_two_stage_band_width_against_lapack(n):
    """The banded route (dsytrd_sy2sb with a chosen width, dsytrd_sb2st, dsterf, called
    directly) against numpy's dsyevd, for every width from 1 to past n, including LAPACK's own
    (None: the dsyevd_2stage driver), on a Gram matrix with a 1e-12 spread."""
    import distsketch.spectral._esd as esd

    ts = esd._find_two_stage()
    if not ts or ts.banded is None:
        pytest.skip("numpy's OpenBLAS does not export the two-stage routines")
    rng = np.random.default_rng(n)
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = np.logspace(-12, 0, n)
    G = np.ascontiguousarray((U * lam) @ U.T)
    G = (G + G.T) / 2
    ref = np.linalg.eigvalsh(G)
    for kd in (None, 1, 2, 8, esd.BAND_WIDTH, n - 2, n - 1, n, 2 * n):
        e = ts.eigvalsh(G.copy(), kd)
        assert e is not None, kd
        assert np.all(np.diff(e) >= 0), kd
        assert np.max(np.abs(e - ref)) <= 1e2 * n * np.finfo(float).eps * ref[-1], kd
        assert np.max(np.abs(e - lam)) <= 1e2 * n * np.finfo(float).eps, kd  # the exact spectrum


def test_two_stage_eigensolver_gives_the_same_metrics(monkeypatch):
    """LAPACK's two-stage dsyevd (used from TWO_STAGE_MIN up; lowered here to reach it on small
    layers) against numpy's dsyevd and against WeightWatcher's own SVD path."""
    import distsketch.spectral._esd as esd

    if not esd._find_two_stage():
        pytest.skip("numpy's OpenBLAS does not export LAPACKE_dsyevd_2stage")
    rng = np.random.default_rng(21)
    src = {"a.weight": rng.standard_normal((300, 200)),                               # tall
           "b.weight": rng.standard_t(3, (180, 260)),                                 # wide, heavy-tailed
           "c.weight": _with_spectrum(rng, 320, 240, 3.0 * (rng.pareto(2.0, 12) + 1))}  # a tail
    G = src["a.weight"].T @ src["a.weight"]
    monkeypatch.setattr(esd, "TWO_STAGE_MIN", 64)
    e2 = esd._eigvalsh_inplace(G.copy())
    e1 = np.linalg.eigvalsh(G)
    assert e2 is not None and np.max(np.abs(e2 - e1)) <= 1e3 * np.finfo(float).eps * e1[-1]
    two = analyze(src, detX=True, mp_fit=True).set_index("name")
    monkeypatch.setattr(esd, "TWO_STAGE_MIN", 1 << 62)
    one = analyze(src, detX=True, mp_fit=True).set_index("name")
    svd = analyze(src, detX=True, mp_fit=True, eig_method="svd").set_index("name")
    for ref in (one, svd):
        for c in EXACT_1E9 + ["sv_min"]:
            if c in two.columns:
                np.testing.assert_allclose(two[c], ref[c], rtol=1e-9, err_msg=c)
        for c in INTS:
            if c in two.columns:
                assert (two[c] == ref[c]).all(), c

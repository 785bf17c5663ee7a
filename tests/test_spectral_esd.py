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


def _ill_conditioned(rng, shape, small):
    U, _ = np.linalg.qr(rng.standard_normal(shape))
    V, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
    sv = np.concatenate([np.logspace(0, -2.2, shape[1] - len(small)), small])
    return (U * (3.0 * sv)) @ V.T  # sigma_max 3: log10 of it is not a rounding error


@pytest.fixture
def two_stage_band():
    """The two-stage eigensolver with what the band route needs (its Fortran routines and dormqr)."""
    import distsketch.spectral._esd as esd

    ts = esd._find_two_stage()
    if not ts or ts.banded is None or ts.ormqr is None:
        pytest.skip("numpy's OpenBLAS does not export the two-stage routines and dormqr")
    return ts


@pytest.mark.parametrize("n,kd", [(70, 1), (200, 8), (300, 64), (300, 297)])
def test_band_reduction_q_reproduces_the_gram_matrix(two_stage_band, n, kd):
    """What the full -> band reduction keeps (Q's reflectors in G, tau, the band) is what
    the band route's inverse needs: Q B Q^T is the matrix reduced, Q orthogonal, Q^T undoes Q."""
    rng = np.random.default_rng(n + kd)
    A = rng.standard_normal((n + 5, n))
    G0 = A.T @ A
    e, band = two_stage_band.eigvalsh(G0.copy(), kd, keep=True)  # overwritten
    assert band is not None and band.kd == kd
    np.testing.assert_allclose(e, np.linalg.eigvalsh(G0), rtol=0, atol=1e3 * np.finfo(float).eps * e[-1])
    B = np.zeros((n, n))
    for d in range(kd + 1):  # LAPACK's lower band storage: ab.T[d, j] = B[j + d, j]
        j = np.arange(n - d)
        B[j + d, j] = B[j, j + d] = band.ab[j, d]
    Q = band.apply_q(np.asfortranarray(np.eye(n)), b"N")
    np.testing.assert_allclose(Q.T @ Q, np.eye(n), atol=1e-13)
    np.testing.assert_allclose(Q @ B @ Q.T, G0, atol=1e-13 * np.abs(G0).max())
    X = np.asfortranarray(rng.standard_normal((n, 3)))
    np.testing.assert_allclose(band.apply_q(band.apply_q(X.copy(order="F"), b"N"), b"T"), X, atol=1e-12)
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        band.apply_q(np.ones((n, 2)), b"N")  # C-ordered


def test_band_route_refines_without_factoring(two_stage_band, monkeypatch):
    """The smallest singular values through the band reduction's inverse (no LU/QR of the
    weight): as LAPACK's SVD has them, square and tall, and the metrics WeightWatcher's way."""
    import distsketch.spectral._esd as esd

    monkeypatch.setattr(esd, "TWO_STAGE_MIN", 64)
    factored = []
    real = esd._refine_smallest
    monkeypatch.setattr(esd, "_refine_smallest", lambda *a: factored.append(a[0].shape) or real(*a))
    rng = np.random.default_rng(5)
    # each small value below 1e-6 sigma_max (1e-12 lambda_max): all of them refined
    for shape, small in (((300, 300), [5e-7, 3e-7, 1e-7]), ((400, 300), [5e-7, 2e-7]),
                         ((260, 380), [5e-7]), ((300, 300), [3e-7, 3.1e-7, 3.2e-7, 3.4e-7]),
                         # 30 values just above the block: the band's eigenvectors alone, lifted, are
                         # ~4e-9 and ~1e-8 off here (the Gram error over lambda_(b+1)); the steps
                         # with A bring them to ~2e-11 and ~3e-10
                         ((300, 300), [1e-7] + [6e-6 * (1 + 0.01 * i) for i in range(30)]),
                         ((300, 300), [3e-8] + [6e-6 * (1 + 0.01 * i) for i in range(30)])):
        W = _ill_conditioned(rng, shape if shape[0] >= shape[1] else shape[::-1], small)
        W = W if shape[0] >= shape[1] else W.T
        ref = sla.svd(W, compute_uv=False)[::-1]
        ev, used = esd.singular_values_squared([W])
        assert used == "gram+inverse" and not factored, shape
        k = int(np.count_nonzero(np.array(small) < 1e-6))
        np.testing.assert_allclose(np.sqrt(ev[0][:k]), ref[:k], rtol=1e-9)  # the Gram alone: ~1e-4 off
        assert np.max(np.abs(ev[0] - ref**2)) <= 1e3 * np.finfo(float).eps * ref[-1] ** 2
        df = analyze({"a.weight": W})
        svd = analyze({"a.weight": W}, eig_method="svd")
        for c in EXACT_1E9 + ["sv_min"]:
            if c in df.columns:
                np.testing.assert_allclose(df[c], svd[c], rtol=1e-9, err_msg=c)
        assert (df["matrix_rank"] == svd["matrix_rank"]).all()
    # below what the Gram matrix resolves (B not positive definite): the factor route, still exact
    W = _ill_conditioned(rng, (300, 300), [1e-9, 1e-10])  # x 3
    ev, used = esd.singular_values_squared([W])
    assert factored == [(300, 300)] and used == "gram+inverse"
    np.testing.assert_allclose(np.sqrt(ev[0][:2]), sla.svd(W, compute_uv=False)[::-1][:2], rtol=1e-6)
    # refined, but too close to a tolerance to call: straight to the SVD, not through a factor of W
    monkeypatch.setattr(esd, "_with_refined", lambda *a: None)
    W = _ill_conditioned(rng, (300, 300), [5e-7])
    ev, used = esd.singular_values_squared([W])
    assert used == "svd" and factored == [(300, 300)]  # the factor route ran only for the case above
    np.testing.assert_allclose(np.sqrt(ev[0]), sla.svd(W, compute_uv=False)[::-1], rtol=1e-12, atol=0)

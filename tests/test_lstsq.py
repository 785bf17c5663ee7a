"""lstsq against LAPACK's gelsd (scipy) on the same data, numpy and dask, every method and problem
kind; pass counts; checkpoints; bad input."""

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.linalg

import distsketch
from distsketch.errors import NonFiniteError, ParameterError, ShapeError
from distsketch.problems import generate_problem

# (m, n, cond, frac_in_range, rank, dtype): a comment per case
CASES = [
    pytest.param(6000, 30, 1.0, 0.9, None, "float64", id="cond1"),
    pytest.param(6000, 30, 1e6, 0.9, None, "float64", id="cond1e6"),
    pytest.param(6000, 30, 1e12, 0.5, None, "float64", id="cond1e12-inconsistent"),
    pytest.param(6000, 30, 1e4, 1.0, None, "float64", id="consistent"),
    pytest.param(6000, 30, 1e4, 0.8, 18, "float64", id="rank18of30"),
    pytest.param(60, 30, 1e4, 0.9, None, "float64", id="m/n=2"),
    pytest.param(30000, 30, 1e3, 0.9, None, "float64", id="m/n=1000"),
    pytest.param(6000, 30, 1e3, 0.9, None, "float32", id="float32"),
]
LAYOUTS = ["numpy", (1500, None), (2001, 13)]


def layout_id(x):
    return x if isinstance(x, str) else f"dask{x}"


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    cache = {}

    def get(m, n, cond, frac, rank, dtype):
        key = (m, n, cond, frac, rank, dtype)
        if key not in cache:
            path = tmp_path_factory.mktemp("ls") / "p.zarr"
            cache[key] = generate_problem(path, m, n, cond=cond, frac_in_range=frac, rank=rank, dtype=dtype,
                                          chunks=1500, seed=7)
        return cache[key]

    return get


def gelsd(A, b, rank_deficient):
    return scipy.linalg.lstsq(A, b, lapack_driver="gelsd", cond=1e-10 if rank_deficient else None)[0]


def normal_error(A, b, x):
    A64, b64, x64 = A.astype(np.float64), b.astype(np.float64), np.asarray(x).astype(np.float64)
    return np.linalg.norm(A64.T @ (b64 - A64 @ x64))


def as_layout(A, b, layout):
    if layout == "numpy":
        return A, b
    rows, cols = layout
    return da.from_array(A, chunks=(rows, cols or A.shape[1])), da.from_array(b, chunks=rows)


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("m, n, cond, frac, rank, dtype", CASES)
def test_full_accuracy_against_gelsd(problems, m, n, cond, frac, rank, dtype, layout):
    p = problems(m, n, cond, frac, rank, dtype)
    A, b = p.numpy("A"), p.numpy("b")
    xg = gelsd(A, b, rank is not None)
    eps = np.finfo(dtype).eps
    ref_normar = normal_error(A, b, xg)
    nx = np.linalg.norm(p.x)
    # perturbation theory of least squares: eps (cond + cond^2 ||r|| / (||A|| ||x||))
    theory = eps * p.cond * (1 + p.cond * p.norm_r / (p.s[0] * nx))
    fwd_g = np.linalg.norm(xg - p.x) / nx
    Ain, bin_ = as_layout(A, b, layout)
    for method in ("cholqr", "sketch_precondition"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", distsketch.IllConditionedWarning)
            res = distsketch.lstsq(Ain, bin_, method=method, atol=1e-15, btol=1e-15, seed=3)
        assert res.x.dtype == np.dtype(dtype) and isinstance(res.x, np.ndarray)
        assert res.method == method and res.converged, (method, res.istop, res.message)
        normar = normal_error(A, b, res.x)
        # what a backward-stable x's computed A.T r carries: eps ||A|| (||r|| + ||A|| ||x||). At cond 1e12
        # (inconsistent, ||x|| 1.6e5) gelsd sits at 0.02 of it and refined LSQR at 0.08-0.5, depending on
        # the chunk order and the BLAS kernels (AMD EPYC: 13-26x gelsd; SkylakeX: under 10x)
        rg = max(np.linalg.norm(b - A @ xg), eps * np.linalg.norm(b))
        floor = eps * p.s[0] * (10 * rg + p.s[0] * np.linalg.norm(xg))
        assert normar <= 10 * ref_normar + floor, (method, normar, ref_normar, floor)
        fwd = np.linalg.norm(res.x.astype(np.float64) - p.x) / nx
        assert fwd <= 10 * max(fwd_g, theory), (method, fwd, fwd_g, theory)
        # the reported residual norm is the true one of the returned x
        assert res.normr == pytest.approx(np.linalg.norm(b.astype(float) - A.astype(float) @ res.x.astype(float)),
                                          rel=1e-5 if dtype == "float32" else 1e-8, abs=1e-12)
        if method == "cholqr" and dtype == "float64":
            assert res.passes <= 5, res.passes
        assert res.rank == (rank or n)


@pytest.mark.parametrize("kind", ["sparse_sign", "gaussian", "srct"])
def test_sketch_solve_meets_its_bound(problems, kind):
    p = problems(6000, 30, 1e6, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    for seed in range(4):
        res = distsketch.lstsq(A, b, method="sketch_solve", seed=seed, kind=kind)
        assert res.passes == 1
        eps = res.eps_sketch
        assert np.linalg.norm(b - A @ res.x) <= (1 + eps) / (1 - eps) * p.norm_r
        # the sketched residual estimates the true one within the same distortion
        assert abs(res.normr / np.linalg.norm(b - A @ res.x) - 1) <= eps


@pytest.mark.parametrize("layout", ["numpy", (100, 700)], ids=layout_id)
def test_underdetermined_min_norm(tmp_path, layout):
    p = generate_problem(tmp_path / "w.zarr", 200, 4000, cond=1e5, chunks=(200, 700), seed=1)
    A, b = p.numpy("A"), p.numpy("b")
    xg = gelsd(A, b, False)
    Ain = A if layout == "numpy" else da.from_array(A, chunks=layout)
    res = distsketch.lstsq(Ain, b, atol=1e-15, btol=1e-15, seed=0)
    assert res.method == "cholqr" and "minimum-norm" in res.reason
    x = np.asarray(res.x)
    if layout != "numpy":
        assert isinstance(res.x, da.Array) and res.x.shape == (4000,)
    assert np.linalg.norm(x - xg) <= 1e-9 * np.linalg.norm(xg)
    assert np.linalg.norm(A @ x - b) <= 10 * np.linalg.norm(A @ xg - b) + 1e-14 * np.linalg.norm(b)
    # normr is ||A x - b|| as tracked by the refinement: right to rounding, eps ||A|| ||x||
    assert abs(res.normr - np.linalg.norm(A @ x - b)) <= 1e-14 * p.s[0] * np.linalg.norm(x)


@pytest.mark.parametrize("method", ["cholqr", "sketch_precondition"])
@pytest.mark.parametrize("damp", [1e-3, 0.5])
def test_ridge_against_dense_solve(method, damp):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((5000, 25)) * np.logspace(0, -6, 25)
    b = rng.standard_normal(5000)
    # augmented system [A; damp I] x = [b; 0], solved densely by LAPACK
    Aug = np.vstack([A, damp * np.eye(25)])
    x_ref = scipy.linalg.lstsq(Aug, np.concatenate([b, np.zeros(25)]), lapack_driver="gelsd")[0]
    res = distsketch.lstsq(A, b, damp=damp, method=method, atol=1e-15, btol=1e-15, seed=2)
    assert np.linalg.norm(res.x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)


@pytest.mark.parametrize("layout", ["numpy", (999, None)], ids=layout_id)
def test_saddle_point_pair_against_dense_solve(layout):
    """min ||A x - b||^2 + 2 c.T x  <->  min ||y - b||^2 s.t. A.T y = c: [[I, A], [A.T, 0]] [y; x] = [b; c]."""
    rng = np.random.default_rng(6)
    m, n = 3000, 20
    A = rng.standard_normal((m, n)) * np.logspace(0, -3, n)
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    K = np.block([[np.eye(m), A], [A.T, np.zeros((n, n))]])
    sol = scipy.linalg.solve(K, np.concatenate([b, c]))
    y_ref, x_ref = sol[:m], sol[m:]
    Ain, bin_ = as_layout(A, b, layout)
    res = distsketch.lstsq(Ain, bin_, c=c, atol=1e-15, btol=1e-15, seed=0)
    assert res.method == "cholqr"
    y = np.asarray(res.y)
    assert np.linalg.norm(res.x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)
    assert np.linalg.norm(y - y_ref) <= 1e-10 * np.linalg.norm(y_ref)
    assert np.linalg.norm(A.T @ y - c) <= 1e-10 * np.linalg.norm(c)
    # b = 0: y is the minimum-norm solution of A.T y = c
    res0 = distsketch.lstsq(A, np.zeros(m), c=c, atol=1e-15, btol=1e-15, seed=0)
    y0 = scipy.linalg.lstsq(A.T, c, lapack_driver="gelsd")[0]
    assert np.linalg.norm(res0.y - y0) <= 1e-10 * np.linalg.norm(y0)


def test_auto_records_choice_and_reason(problems):
    p = problems(6000, 30, 1e6, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    res = distsketch.lstsq(A, b, seed=0)
    assert res.method in ("normal_cholqr", "cholqr", "sketch_precondition")
    assert "in memory" in res.reason and "cholqr ~" in res.reason and "sketch_precondition ~" in res.reason
    # 6000 x 30 is under 1e10 flops: nominal rates, no measurement
    assert "GEMM" in res.reason and "nominal" in res.reason
    lazy = distsketch.lstsq(p.dask("A"), p.dask("b"), seed=0)
    assert lazy.method in ("normal_cholqr", "cholqr") and "out of core" in lazy.reason
    # both full accuracy: they agree to the forward-error level of this cond 1e6 problem
    assert np.linalg.norm(lazy.x - res.x) <= 1e-6 * np.linalg.norm(res.x)


def test_cost_model_follows_the_rates():
    """The choice follows the rates it is given: cheap reads favour LSQR, slow reads the 3-read methods."""
    from distsketch.solve.lstsq import choose_method, method_costs

    fast_flops = {"gemm_1t": 5e10, "sparse_1t": 2e9, "read_bw": 2e10}
    m, n = 100_000, 2_000
    c = method_costs(m, n, lazy=False, itemsize=8, atol=1e-12, threads=2, rates=fast_flops)
    # SYRK m n^2 over 2 x 50 GFLOP/s; one read 1.6 GB at 20 GB/s
    assert c["terms"]["syrk_s"] == pytest.approx(m * n * n / 1e11)
    assert c["terms"]["read_s"] == pytest.approx(m * n * 8 / 2e10)
    assert c["passes"]["normal_cholqr"] == 2 and c["passes"]["sketch_precondition"] > 20
    slow_flops = dict(fast_flops, gemm_1t=1e9)
    meth, reason = choose_method(m, n, lazy=False, itemsize=8, atol=1e-12, c_given=False, minnorm=False, threads=2,
                                 rates=slow_flops)
    assert meth == "sketch_precondition" and "GEMM 2 GFLOP/s measured" in reason
    meth, reason = choose_method(m, n, lazy=True, itemsize=8, atol=1e-12, c_given=False, minnorm=False, threads=2,
                                 rates=fast_flops)
    assert meth == "normal_cholqr" and "falls back to cholqr" in reason and "assumed" in reason


# --- the passes of the least-squares paths, against dense products ---------------------------------
@pytest.mark.parametrize("layout", ["numpy", (1300, None), (999, 7)], ids=layout_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_normal_gram_and_tiled_step_against_dense(layout, dtype):
    from distsketch import passes
    from distsketch.backends import as_rowdata

    rng = np.random.default_rng(11)
    A = rng.standard_normal((4000, 19)).astype(dtype)
    b, u = rng.standard_normal(4000), rng.standard_normal(4000)
    A64 = A.astype(np.float64)
    Ain, bin_ = as_layout(A, b, layout)
    data = as_rowdata(Ain)
    G, (h,) = passes.normal_gram(data, extra=[data.distribute(bin_)])
    # float64 whatever the data's dtype; symmetric, and equal to A.T A
    assert G.dtype == h.dtype == np.float64 and np.array_equal(G, G.T)
    np.testing.assert_allclose(G, A64.T @ A64, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(h[:, 0], A64.T @ b, rtol=1e-12, atol=1e-10)
    assert data.passes == 1
    v = rng.standard_normal(19)
    w, ATw, ww = passes.lsqr_step_tiled(data, v, data.distribute(u), 0.7)
    w_ref = A64 @ v - 0.7 * u
    np.testing.assert_allclose(np.asarray(data.gather(w))[:, 0], w_ref, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(ATw[:, 0], A64.T @ w_ref, rtol=1e-11, atol=1e-9)
    assert ww == pytest.approx(w_ref @ w_ref, rel=1e-12) and data.passes == 2


def test_tiled_step_spans_many_tiles(monkeypatch):
    """Tiles of 16 rows (the minimum) inside 4096-row blocks: the sums over tiles are the dense ones."""
    from distsketch import passes
    from distsketch.backends import NumpyRowData

    monkeypatch.setattr(passes, "TILE_BYTES", 1)
    monkeypatch.setattr(passes, "TILE_MIN_ROWS", 16)
    rng = np.random.default_rng(12)
    A, v, u = rng.standard_normal((10_000, 5)), rng.standard_normal(5), rng.standard_normal(10_000)
    w, ATw, ww = passes.lsqr_step_tiled(NumpyRowData(A, block_rows=4096), v, u, -1.5)
    w_ref = A @ v + 1.5 * u
    np.testing.assert_allclose(w[:, 0], w_ref, rtol=1e-13)
    np.testing.assert_allclose(ATw[:, 0], A.T @ w_ref, rtol=1e-12)
    assert ww == pytest.approx(w_ref @ w_ref, rel=1e-13)


# --- normal_cholqr: the Cholesky factor of A.T A, no sketch ---------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("cond", [1e2, 1e4, 1e5, 1e6])
def test_normal_cholqr_against_gelsd(problems, cond, layout):
    p = problems(6000, 30, cond, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    xg = gelsd(A, b, False)
    Ain, bin_ = as_layout(A, b, layout)
    res = distsketch.lstsq(Ain, bin_, method="normal_cholqr", seed=3)
    assert res.method == "normal_cholqr" and res.converged and res.istop in (1, 2, 5), res.reason
    # the Gram read, the read before the forced corrected semi-normal step, which A.T A checks
    # (a third read only if the bounds do not allow it: not at these sizes and conditions)
    assert res.passes == 2 and res.iterations == 1 and res.history[-1]["from_gram"], res.history
    assert "checked from A.T A" in res.reason and "column-scaled Cholesky of A.T A" in res.reason
    # ||A||_F is exact (from A.T A), and the condition estimate is within 0.8x of cond(A) (below it)
    assert res.anorm == pytest.approx(np.linalg.norm(A), rel=1e-12)
    assert 0.8 * p.cond <= res.cond <= 1.01 * p.cond
    eps = np.finfo(np.float64).eps
    floor = 10 * eps * p.s[0] * np.linalg.norm(b - A @ xg)
    assert normal_error(A, b, res.x) <= 10 * normal_error(A, b, xg) + floor
    nx = np.linalg.norm(p.x)
    theory = eps * p.cond * (1 + p.cond * p.norm_r / (p.s[0] * nx))
    fwd_g = np.linalg.norm(xg - p.x) / nx
    assert np.linalg.norm(res.x - p.x) / nx <= 10 * max(fwd_g, theory)
    # normr is that of the returned x; normar bounds its ||A.T r|| (as evaluated here, with its own
    # rounding), and is no looser than the rounding level rho
    assert res.normr == pytest.approx(np.linalg.norm(b - A @ res.x), rel=1e-10)
    true_g = np.linalg.norm(A.T @ (b - A @ res.x))
    rho = 10 * np.sqrt(30) * eps * (res.anorm * (res.normr + res.anorm * np.linalg.norm(res.x)))
    assert true_g <= res.normar <= rho


@pytest.mark.parametrize("layout", ["numpy", (2001, 13)], ids=layout_id)
@pytest.mark.parametrize("method", ["normal_cholqr", "auto"])
@pytest.mark.parametrize("cond", [4e6, 8e6])
def test_normal_cholqr_consistent_near_the_gate_reaches_gelsd_accuracy(problems, cond, method, layout):
    """A consistent system (b in range(A)) below the 1e7 gate: the residual tests cannot see the
    forward error along A's small singular directions, and one corrected step left it at 5e-6 at cond
    8e6 (600x the bound below) with converged true. The steps now go on until the step itself says
    the error is within sqrt(n) eps cond ||x||: the forward error of gelsd's order, in more reads."""
    p = problems(6000, 30, cond, 1.0, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    xg = gelsd(A, b, False)
    Ain, bin_ = as_layout(A, b, layout)
    res = distsketch.lstsq(Ain, bin_, method=method, seed=3, atol=0, btol=0)
    assert res.method == "normal_cholqr" and res.converged, res.reason
    nx = np.linalg.norm(p.x)
    eps = np.finfo(np.float64).eps
    fwd_g = np.linalg.norm(xg - p.x) / nx
    assert np.linalg.norm(res.x - p.x) / nx <= 10 * max(fwd_g, eps * p.cond), (fwd_g, res.history)
    assert "refinement step(s)" in res.reason, res.reason
    # a residual checked from A.T A is never reported below the true one (its expansion cancelled to 0)
    assert res.normr >= 0.9 * np.linalg.norm(b - A @ res.x), (res.normr, res.history)


def test_float32_status_says_it_describes_the_float64_iterate(problems):
    p = problems(6000, 30, 1e3, 0.9, None, "float32")
    res = distsketch.lstsq(p.numpy("A"), p.numpy("b"), method="auto", seed=1)
    assert res.x.dtype == np.float32 and res.converged
    assert "those of the float64 iterate, returned rounded to float32" in res.reason, res.reason


def test_normal_cholqr_column_scaled_past_1_over_eps_gives_the_minimum_norm_solution():
    """Columns scaled to cond(A) ~ 1e20 with a well-conditioned scaled Gram: the normal path would return
    the full-rank solution, every other method (and gelsd) the minimum-norm one over the numerical rank,
    with the warning. normal_cholqr now hands over to cholqr there, so all agree."""
    B = np.random.default_rng(0).standard_normal((4000, 10))
    D = np.ones(10)
    D[3] = 1e-20
    A = B * D
    b = np.random.default_rng(1).standard_normal(4000)
    with pytest.warns(distsketch.IllConditionedWarning):
        res = distsketch.lstsq(A, b, method="normal_cholqr", seed=0)
    assert res.method == "cholqr" and "1/eps" in res.reason, res.reason
    xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert abs(res.x[3] * 1e-20) < 1e-10  # no component along the negligible column
    np.testing.assert_allclose(res.x, xg, rtol=1e-8, atol=1e-8 * np.linalg.norm(xg))


@pytest.mark.parametrize("scale", [1e-75, 1e75])
def test_normal_cholqr_cond_estimate_at_extreme_scales(scale):
    """The condition estimate of R is taken on R times a power of two: it was NaN at ||A|| ~ 1e+-77."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((3000, 12)) * np.geomspace(1, 1e3, 12)
    b = rng.standard_normal(3000)
    ref = distsketch.lstsq(A, b, method="normal_cholqr", seed=0)
    res = distsketch.lstsq(A * scale, b, method="normal_cholqr", seed=0)
    assert res.method == "normal_cholqr" and res.converged, res.reason
    assert np.isfinite(res.cond) and res.cond == pytest.approx(ref.cond, rel=1e-6)
    np.testing.assert_allclose(res.x * scale, ref.x, rtol=1e-9)


@pytest.mark.parametrize("layout", ["numpy", (2001, 13)], ids=layout_id)
def test_normal_cholqr_falls_back_beyond_cond_limit(problems, layout):
    """cond 1e12: the Gram of A holds nothing beyond sqrt(1/eps); the sketch is read and cholqr's Gram of
    A R^-1 runs instead."""
    p = problems(6000, 30, 1e12, 0.5, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    Ain, bin_ = as_layout(A, b, layout)
    res = distsketch.lstsq(Ain, bin_, method="normal_cholqr", seed=3)
    assert res.method == "cholqr" and "ran cholqr" in res.reason, res.reason
    assert "> 1e+07" in res.reason or "Cholesky of A.T A failed" in res.reason
    xg = gelsd(A, b, False)
    eps = np.finfo(np.float64).eps
    assert normal_error(A, b, res.x) <= 10 * normal_error(A, b, xg) + 10 * eps * p.s[0] * np.linalg.norm(b - A @ xg)
    # the Gram read, the sketch's read, the Gram of A R^-1, the refinement reads
    assert 4 <= res.passes <= 6


def test_normal_cholqr_gate_refuses_a_factor_it_could_compute(problems):
    """cond 3e7: the Cholesky of A.T A succeeds (cond(A.T A) ~1e15 < 1/eps), but its condition estimate
    is past 1e7, where a refinement step would contract the error by only ~eps cond^2 ~ 0.2."""
    p = problems(6000, 30, 3e7, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    res = distsketch.lstsq(A, b, method="normal_cholqr", seed=3)
    assert res.method == "cholqr" and "> 1e+07" in res.reason and res.converged, res.reason
    xg = gelsd(A, b, False)
    eps = np.finfo(np.float64).eps
    assert normal_error(A, b, res.x) <= 10 * normal_error(A, b, xg) + 10 * eps * p.s[0] * np.linalg.norm(b - A @ xg)


def test_normal_cholqr_zero_column_falls_back_to_the_minimum_norm_solution():
    """A zero column: A.T A is singular, the method says so and cholqr returns gelsd's minimum-norm x."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3000, 12))
    A[:, 5] = 0
    b = rng.standard_normal(3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", distsketch.IllConditionedWarning)
        res = distsketch.lstsq(A, b, method="normal_cholqr", seed=1)
    assert res.method == "cholqr" and "column 5 of A is zero" in res.reason and res.converged, res.reason
    xg = gelsd(A, b, False)
    assert res.x[5] == 0 or abs(res.x[5]) <= 1e-12 * np.linalg.norm(xg)
    assert np.linalg.norm(res.x - xg) <= 1e-10 * np.linalg.norm(xg)


def test_normal_cholqr_chunk_invariant_and_counted(problems):
    """Any chunking gives x to its forward-error level (the Gram sums differ by rounding); passes equal
    the reads counted."""
    from .test_passes import CountingArray

    p = problems(6000, 30, 1e4, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    xs = []
    for rows, cols in ((1000, 30), (1500, 7), (6000, 30)):
        counted = CountingArray(A)
        Ad = da.from_array(counted, chunks=(rows, cols), asarray=False)
        counted.reads = 0
        res = distsketch.lstsq(Ad, da.from_array(b, chunks=rows), method="normal_cholqr", seed=1)
        nchunks = -(-6000 // rows) * -(-30 // cols)
        assert res.method == "normal_cholqr" and counted.reads == res.passes * nchunks == 2 * nchunks
        xs.append(res.x)
    ref = distsketch.lstsq(A, b, method="normal_cholqr", seed=1).x
    # the sums of A.T A differ by rounding between chunkings: x agrees to its forward-error level
    nx = np.linalg.norm(p.x)
    theory = np.finfo(np.float64).eps * p.cond * (1 + p.cond * p.norm_r / (p.s[0] * nx))
    for x in xs:
        assert np.linalg.norm(x - ref) <= 10 * theory * nx


@pytest.mark.parametrize("damp", [1e-3, 0.5])
def test_normal_cholqr_ridge_against_dense_solve(damp):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((5000, 25)) * np.logspace(0, -4, 25)
    b = rng.standard_normal(5000)
    Aug = np.vstack([A, damp * np.eye(25)])
    x_ref = scipy.linalg.lstsq(Aug, np.concatenate([b, np.zeros(25)]), lapack_driver="gelsd")[0]
    res = distsketch.lstsq(A, b, damp=damp, method="normal_cholqr", seed=2)
    assert res.method == "normal_cholqr"
    assert np.linalg.norm(res.x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)


def test_normal_cholqr_float32_and_c_term(problems):
    p = problems(6000, 30, 1e3, 0.9, None, "float32")
    A, b = p.numpy("A"), p.numpy("b")
    res = distsketch.lstsq(A, b, method="normal_cholqr", seed=0)
    assert res.x.dtype == np.float32 and res.method == "normal_cholqr"
    xg = gelsd(A.astype(np.float64), b.astype(np.float64), False)
    assert np.linalg.norm(res.x - xg) <= 1e-4 * np.linalg.norm(xg)
    # the saddle-point problem (c given) is cholqr's, and the reason says so
    res_c = distsketch.lstsq(A.astype(np.float64), b.astype(np.float64), c=np.ones(30), method="normal_cholqr", seed=0)
    assert res_c.method == "cholqr" and "ran cholqr" in res_c.reason and res_c.y is not None


def test_seed_is_recorded_and_reproduces(problems):
    p = problems(6000, 30, 1e6, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    r1 = distsketch.lstsq(A, b, method="sketch_solve", seed=None)
    r2 = distsketch.lstsq(A, b, method="sketch_solve", seed=r1.seed)
    np.testing.assert_array_equal(r1.x, r2.x)


def test_passes_match_counted_chunk_reads(problems):
    """Every read of A goes through a counting wrapper: result.passes == chunk reads / chunks."""
    from .test_passes import CountingArray

    p = problems(6000, 30, 1e6, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    for method in ("cholqr", "sketch_precondition", "sketch_solve"):
        counted = CountingArray(A)
        Ad = da.from_array(counted, chunks=(1000, 30), asarray=False)
        counted.reads = 0  # from_array peeks at an empty slice for its meta
        res = distsketch.lstsq(Ad, b, method=method, seed=1)
        assert counted.reads == res.passes * 6, (method, counted.reads, res.passes)
    assert res.passes == 1


def test_maxiter_reached_is_reported(problems):
    p = problems(6000, 30, 1e6, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    with pytest.warns(distsketch.ConvergenceWarning, match="reached maxiter=2 before its stopping test held"):
        res = distsketch.lstsq(A, b, method="sketch_precondition", maxiter=2, seed=0)
    assert res.istop == 7 and res.message == "The iteration limit has been reached" and res.iterations == 2
    # x is the best iterate: better than the sketch-and-solve start
    start = distsketch.lstsq(A, b, method="sketch_solve", seed=0).x
    assert np.linalg.norm(b - A @ res.x) <= np.linalg.norm(b - A @ start)
    with pytest.warns(distsketch.ConvergenceWarning):
        res = distsketch.lstsq(A, b, method="cholqr", maxiter=0, atol=1e-16, btol=0, seed=0)
    assert res.istop in (5, 7)


def test_ill_conditioned_warning(tmp_path):
    p = generate_problem(tmp_path / "r.zarr", 3000, 20, cond=1e3, rank=12, seed=0)
    with pytest.warns(distsketch.IllConditionedWarning, match=r"beyond 1/eps .*\(rank 12 of 20 kept\)"):
        res = distsketch.lstsq(p.numpy("A"), p.numpy("b"), seed=0)
    assert res.rank == 12


def test_checkpoint_interrupt_and_resume(problems, tmp_path, monkeypatch):
    """Interrupt an LSQR solve mid-way, resume from its checkpoint: the same x as an uninterrupted run."""
    from distsketch import passes as P

    p = problems(6000, 30, 1e6, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    for method in ("sketch_precondition", "cholqr", "normal_cholqr"):
        full = distsketch.lstsq(A, b, method=method, atol=1e-15, btol=1e-15, seed=4)
        ck = tmp_path / f"{method}.npz"
        real = P.lsqr_step_tiled
        calls = {"n": 0}

        def flaky(*a, **k):
            calls["n"] += 1
            if calls["n"] == {"sketch_precondition": 12, "cholqr": 1, "normal_cholqr": 1}[method]:
                raise KeyboardInterrupt("killed")
            return real(*a, **k)

        monkeypatch.setattr(P, "lsqr_step_tiled", flaky)
        with pytest.raises(KeyboardInterrupt):
            distsketch.lstsq(A, b, method=method, atol=1e-15, btol=1e-15, seed=4, checkpoint=ck)
        assert ck.exists()
        monkeypatch.setattr(P, "lsqr_step_tiled", real)
        resumed = distsketch.lstsq(A, b, method=method, atol=1e-15, btol=1e-15, seed=4, checkpoint=ck)
        np.testing.assert_array_equal(resumed.x, full.x)
        assert resumed.passes == full.passes and resumed.iterations == full.iterations
        assert not ck.exists()
        # a checkpoint of another problem is refused
        with pytest.raises(KeyboardInterrupt):
            monkeypatch.setattr(P, "lsqr_step_tiled", flaky)
            calls["n"] = 0
            distsketch.lstsq(A, b, method=method, atol=1e-15, btol=1e-15, seed=4, checkpoint=ck)
        monkeypatch.setattr(P, "lsqr_step_tiled", real)
        with pytest.raises(ParameterError, match="written by a solve with different arguments"):
            distsketch.lstsq(A, b, method=method, atol=1e-15, btol=1e-15, seed=5, checkpoint=ck)
        ck.unlink()


# --- bad input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def Ab():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3000, 10)), rng.standard_normal(3000)


@pytest.mark.parametrize(
    "make, kw, exc, match",
    [
        (lambda A, b: (A, b[:-1]), {}, ShapeError, r"b must have m=3000 entries to match A \(3000, 10\); got shape \(2999,\)"),
        (lambda A, b: (A, np.ones((3000, 2))), {}, ShapeError, r"b must be a vector"),
        (lambda A, b: (np.ones((0, 10)), np.ones(0)), {}, ShapeError, r"A is empty \(shape \(0, 10\)\)"),
        (lambda A, b: (A[:, :0], b), {}, ShapeError, "A is empty"),
        (lambda A, b: (A, b), {"method": "qr"}, ParameterError, "unknown method 'qr'"),
        (lambda A, b: (A, b), {"atol": -1}, ParameterError, "atol must be a finite number >= 0; got -1"),
        (lambda A, b: (A, b), {"damp": float("nan")}, ParameterError, "damp must be a finite number"),
        (lambda A, b: (A, b), {"maxiter": -2}, ParameterError, "maxiter must be a non-negative integer; got -2"),
        (lambda A, b: (A, b), {"c": np.ones(3)}, ShapeError, r"c must have n=10 entries; got shape \(3,\)"),
        (lambda A, b: (A, b), {"x0": np.ones(3)}, ShapeError, "x0 must have n=10 entries"),
        (lambda A, b: (A.T, b[:10]), {"damp": 1.0}, ParameterError, "damp with m < n is not supported"),
        (lambda A, b: (A.T, b[:10]), {"method": "sketch_precondition"}, ParameterError, "sketch_precondition solves m >= n"),
    ],
)
def test_bad_input(Ab, make, kw, exc, match):
    A, b = make(*Ab)
    with pytest.raises(exc, match=match):
        distsketch.lstsq(A, b, **kw)


@pytest.mark.parametrize("where", ["A", "b"])
@pytest.mark.parametrize("layout", ["numpy", (700, None)], ids=layout_id)
def test_nonfinite_named(Ab, where, layout):
    A, b = Ab[0].copy(), Ab[1].copy()
    if where == "A":
        A[2222, 4] = np.inf
        match = r"A holds 1 non-finite value.*row 2222, column 4"
    else:
        b[1717] = np.nan
        match = r"b holds 1 non-finite value.*row 1717"
    Ain, bin_ = as_layout(A, b, layout)
    with pytest.raises(NonFiniteError, match=match):
        distsketch.lstsq(Ain, bin_, seed=0)


def test_zero_rhs_gives_zero(Ab):
    res = distsketch.lstsq(Ab[0], np.zeros(3000))
    assert res.istop == 0 and np.all(res.x == 0) and res.passes == 0


def test_normal_cholqr_fallback_resumes_as_cholqr(problems, tmp_path, monkeypatch):
    """A checkpoint written after the fallback (cond 1e12) resumes into cholqr's refinement: same x.

    Interrupted at the first refinement read: cholqr's checkpoint does not keep the history its
    stagnation test (istop 5) looks at, so a resume after later reads may stop elsewhere."""
    from distsketch import passes as P

    p = problems(6000, 30, 1e12, 0.5, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    kw = dict(method="normal_cholqr", atol=1e-15, btol=1e-15, seed=4)
    full = distsketch.lstsq(A, b, **kw)
    ck = tmp_path / "fb.npz"
    real = P.lsqr_step_tiled
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(P, "lsqr_step_tiled", flaky)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, checkpoint=ck, **kw)
    monkeypatch.setattr(P, "lsqr_step_tiled", real)
    resumed = distsketch.lstsq(A, b, checkpoint=ck, **kw)
    assert full.method == resumed.method == "cholqr" and "ran cholqr" in resumed.reason
    assert resumed.reason == full.reason  # the decision repeated from the saved Gram of A
    np.testing.assert_array_equal(resumed.x, full.x)
    assert resumed.passes == full.passes and resumed.iterations == full.iterations


def test_normal_cholqr_column_scaling():
    """Columns scaled over 8 decades: cond(A) ~1e8 is past the limit, but the column-scaled Gram is
    well conditioned, so the normal path runs (2 reads) and matches gelsd column by column."""
    rng = np.random.default_rng(7)
    m, n = 5000, 25
    scales = np.geomspace(1, 1e-8, n)
    A = rng.standard_normal((m, n)) * scales
    b = rng.standard_normal(m)
    res = distsketch.lstsq(A, b, method="normal_cholqr", seed=1)
    assert res.method == "normal_cholqr" and res.passes == 2 and res.converged, res.reason
    assert res.cond > 1e7  # the reported estimate is that of A itself
    xg = gelsd(A, b, False)
    # in the scaled variables (x_j * scale_j) both are accurate to ~eps cond(A D) ~ 1e-15
    np.testing.assert_allclose(res.x * scales, xg * scales, rtol=0, atol=1e-12 * np.linalg.norm(xg * scales))
    floor = 10 * np.finfo(np.float64).eps * np.linalg.norm(A, 2) * np.linalg.norm(b - A @ xg)
    assert normal_error(A, b, res.x) <= 10 * normal_error(A, b, xg) + floor


def test_normal_cholqr_fallback_interrupted_in_its_sketch_resumes(problems, tmp_path, monkeypatch):
    """Killed in the fallback's sketch read: the checkpoint holds only the Gram of A, whose decision the
    resume repeats without reading A for it; it then reads the sketch and ends as the uninterrupted solve."""
    from distsketch import passes as P

    p = problems(6000, 30, 1e12, 0.5, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    kw = dict(method="normal_cholqr", seed=4)
    full = distsketch.lstsq(A, b, **kw)
    ck = tmp_path / "fbs.npz"
    real_sketch, real_gram = P.left_sketch, P.normal_gram

    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(P, "left_sketch", killed)
    with pytest.raises(KeyboardInterrupt):
        distsketch.lstsq(A, b, checkpoint=ck, **kw)
    monkeypatch.setattr(P, "left_sketch", real_sketch)
    monkeypatch.setattr(P, "normal_gram", killed)  # the resume must not form A.T A again
    resumed = distsketch.lstsq(A, b, checkpoint=ck, **kw)
    monkeypatch.setattr(P, "normal_gram", real_gram)
    assert resumed.method == full.method == "cholqr" and resumed.reason == full.reason
    np.testing.assert_array_equal(resumed.x, full.x)
    assert resumed.passes == full.passes


@pytest.mark.parametrize("n, cond", [(200, 1e5), (300, 1e7), (120, 1e3)])
def test_cond2_estimate_against_svd(n, cond):
    """The gate of normal_cholqr: the 2-norm estimate is close below cond_2(R) (trcon's 1-norm one is not)."""
    from distsketch.solve._cholqr import cond2_estimate

    rng = np.random.default_rng(n)
    U, _ = np.linalg.qr(rng.standard_normal((2 * n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    R = np.linalg.qr((U * np.geomspace(1, 1 / cond, n)) @ V.T, mode="r")
    true = np.linalg.cond(R)
    assert 0.8 * true <= cond2_estimate(R) <= true * (1 + 1e-10)


def test_gram_preconditioner_matches_the_qr():
    """The Cholesky of the sketch's Gram matrix gives the QR's R (up to the signs of its rows) to
    ~eps cond^2, and the same sketch-and-solve x; beyond cond 1e6 it hands over to the QR."""
    from distsketch.solve._precond import GRAM_COND_LIMIT, build_precond

    rng = np.random.default_rng(2)
    d, n = 600, 120
    SA = rng.standard_normal((d, n)) * np.geomspace(1, 1e-4, n)
    Sb = rng.standard_normal(d)
    g, q = build_precond(SA, Sb, method="gram"), build_precond(SA, Sb, method="qr")
    Rq = q.precond.R * np.sign(np.diag(q.precond.R))[:, None]
    assert np.all(np.diag(g.precond.R) > 0)
    assert np.linalg.norm(g.precond.R - Rq) <= 1e-7 * np.linalg.norm(Rq)  # eps cond^2 = 2e-8
    ref = np.linalg.lstsq(SA, Sb, rcond=None)[0]
    assert np.linalg.norm(g.x_sketch - ref) <= 1e-6 * np.linalg.norm(ref)
    assert g.cond == pytest.approx(q.cond, rel=1e-3) and g.rho == pytest.approx(q.rho, rel=1e-6)
    # ridge: the Gram carries damp^2 I, as the QR's stacked damp I rows
    gd, qd = build_precond(SA, Sb, damp=0.3, method="gram"), build_precond(SA, Sb, damp=0.3, method="qr")
    np.testing.assert_allclose(gd.x_sketch, qd.x_sketch, rtol=1e-8, atol=1e-10)
    # cond(S A) ~1e8 > GRAM_COND_LIMIT: the QR runs, and its factor is returned unchanged
    SA2 = rng.standard_normal((d, n)) * np.geomspace(1, 1e-8, n)
    g2, q2 = build_precond(SA2, Sb, method="gram"), build_precond(SA2, Sb, method="qr")
    assert q2.cond > GRAM_COND_LIMIT
    assert np.array_equal(g2.precond.R, q2.precond.R) and np.array_equal(g2.x_sketch, q2.x_sketch)


def test_lsqr_sketch_size_from_the_cost_model():
    """The LSQR sketch size is the cost model's (nominal rates: the same d on any machine), 4n out of
    core and when a larger sketch would exceed its memory cap; the solve reaches gelsd's accuracy."""
    from distsketch.solve.lstsq import LSQR_SKETCH_FACTORS, NOMINAL_RATES, _sketch_eps, method_costs

    kw = dict(itemsize=8, atol=1e-12, threads=2, rates=NOMINAL_RATES)
    f = method_costs(100_000, 2_000, lazy=False, **kw)["terms"]["lsqr_sketch_factor"]
    assert f in LSQR_SKETCH_FACTORS and f > 4  # the factor of a larger sketch costs less than its saved reads
    assert method_costs(100_000, 2_000, lazy=True, **kw)["terms"]["lsqr_sketch_factor"] == 4
    assert method_costs(10**6, 3_000, lazy=False, **kw)["terms"]["lsqr_sketch_factor"] == 4  # 6n: 432 MB
    rng = np.random.default_rng(4)
    m, n = 3000, 40
    A = rng.standard_normal((m, n)) * np.geomspace(1, 1e-5, n)
    b = rng.standard_normal(m)
    res = distsketch.lstsq(A, b, method="sketch_precondition", seed=1, atol=1e-14, btol=1e-14)
    fm = method_costs(m, n, lazy=False, **dict(kw, atol=1e-14))["terms"]["lsqr_sketch_factor"]
    assert res.eps_sketch == pytest.approx(_sketch_eps(n, fm * n))
    if fm != 4:
        assert f"sketch size {fm}n" in res.reason
    # the stopping test holds on the true residual (||A||_F exact here; lstsq's is the sketch's estimate)
    r = b - A @ res.x
    assert res.istop in (1, 2) and res.verified
    assert np.linalg.norm(A.T @ r) <= 2e-14 * np.linalg.norm(A) * np.linalg.norm(r)
    xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert np.linalg.norm(res.x - xg) <= 1e-8 * np.linalg.norm(xg)  # cond 1e5: forward error ~ eps cond^2


def test_normal_cholqr_gram_check_refuses_what_it_cannot_bound(problems, monkeypatch):
    """The step is returned unread only when the bounds hold: a step that does not solve the Gram
    system (its g+ does not vanish) or one too large for the rounding bound of A.T A gives ``None``,
    and the solver then reads as before."""
    from distsketch.solve import _cholqr

    p = problems(6000, 30, 1e4, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    G = A.T @ A
    x0 = np.linalg.solve(G, A.T @ b) * (1 + 1e-9)
    r0 = b - A @ x0
    ATr = A.T @ r0
    dx = np.linalg.solve(G, ATr)
    kw = dict(damp=0.0, atol=1e-12, btol=1e-12, bnorm=np.linalg.norm(b), anrm=np.linalg.norm(A), cnorm=0.0,
              consistent_test=True)
    ok = _cholqr._checked_by_gram(G, 6000, x0 + dx, dx, ATr, ATr, float(r0 @ r0), **kw)
    assert ok is not None and ok[0] in (1, 2, 5)
    assert ok[1] == pytest.approx(np.linalg.norm(b - A @ (x0 + dx)), rel=1e-10)
    assert ok[2] >= np.linalg.norm(A.T @ (b - A @ (x0 + dx)))
    # a step from far away (x0 off by 30%): its g+ vanishes, but gamma_m ||A||_F^2 ||dx|| is above rho
    xf = x0 * 1.3
    rf = b - A @ xf
    gf = A.T @ rf
    dxf = np.linalg.solve(G, gf)
    assert _cholqr._checked_by_gram(G, 6000, xf + dxf, dxf, gf, gf, float(rf @ rf), **kw) is None
    # a step that does not solve G dx = g (half of it, as a factor of another matrix would give)
    half = 0.5 * dx
    assert _cholqr._checked_by_gram(G, 6000, x0 + half, half, ATr, ATr, float(r0 @ r0), **kw) is None
    # refused in the solver: the step is read, as before the check existed
    monkeypatch.setattr(_cholqr, "_checked_by_gram", lambda *a, **k: None)
    res = distsketch.lstsq(A, b, method="normal_cholqr", seed=3)
    assert res.passes == 3 and res.converged and not res.history[-1].get("from_gram")
    assert "checked from A.T A" not in res.reason


@pytest.mark.parametrize("scale", [1e300, 1e-200])
def test_normal_cholqr_beyond_float64_squares_runs_cholqr(problems, scale):
    """||A||^2 over- or underflows: the Gram matrix of the first read is unusable (the sketch's path
    scales the data by a power of two), so cholqr runs; x is gelsd's scaled back exactly."""
    p = problems(6000, 30, 1e4, 0.9, None, "float64")
    A, b = p.numpy("A"), p.numpy("b")
    xg = gelsd(A, b, False)
    res = distsketch.lstsq(A * scale, b, method="normal_cholqr", seed=3)
    assert res.method == "cholqr" and "over- or underflow" in res.reason and res.converged, res.reason
    assert np.linalg.norm(res.x * scale - xg) <= 1e-8 * np.linalg.norm(xg)

"""The Zarr problem generator against LAPACK: singular values, the minimum-norm solution,
the fraction of b in range(A), chunk independence, exact rank, wide problems, atomic writes."""

import os

import numpy as np
import pytest
import scipy.linalg

from distsketch.errors import ParameterError
from distsketch.problems import generate_problem, open_problem, singular_values


@pytest.mark.parametrize("cond, decay, rank, frac", [(1.0, "geometric", None, 1.0), (1e8, "geometric", None, 0.95),
                                                     (1e3, "poly", None, 0.5), (1e4, "flat_drop", 30, 0.0),
                                                     (1e6, "linear", 17, 0.8)])
def test_tall_problem_against_lapack(tmp_path, cond, decay, rank, frac):
    m, n = 6000, 40
    p = generate_problem(tmp_path / "p.zarr", m, n, cond=cond, decay=decay, rank=rank, frac_in_range=frac,
                         chunks=1234, seed=3)
    A, b = p.numpy("A"), p.numpy("b")
    s = scipy.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(s, p.s, rtol=0, atol=1e-14 * 40)
    r = rank or n
    assert np.count_nonzero(p.s) == r and p.attrs["rank"] == r
    if decay in ("geometric", "linear") and r > 1:
        assert p.cond == pytest.approx(cond, rel=1e-9)
    # gelsd's minimum-norm solution is the stored x
    x, res, rk, _ = scipy.linalg.lstsq(A, b, lapack_driver="gelsd", cond=1e-12 if r < n else None)
    fwd_tol = max(1e-12, 50 * p.cond * np.finfo(float).eps * (1 + p.cond * p.norm_r / max(np.linalg.norm(b), 1e-300)))
    if frac > 0:
        assert np.linalg.norm(x - p.x) <= fwd_tol * np.linalg.norm(p.x)
    else:
        assert np.linalg.norm(p.x) == 0 and np.linalg.norm(A.T @ b) <= 1e-12 * np.linalg.norm(b)
    # ||A A^+ b|| / ||b|| is the requested fraction, ||b - A x|| the recorded optimum
    assert np.linalg.norm(A @ x) / np.linalg.norm(b) == pytest.approx(frac, abs=1e-10)
    assert np.linalg.norm(b - A @ p.x) == pytest.approx(p.norm_r, rel=1e-9, abs=1e-12)


def test_same_seed_same_matrix_for_any_chunking(tmp_path):
    a = generate_problem(tmp_path / "a.zarr", 9000, 20, chunks=4096, seed=8, frac_in_range=0.7)
    b = generate_problem(tmp_path / "b.zarr", 9000, 20, chunks=(1001, 7), seed=8, frac_in_range=0.7)
    np.testing.assert_array_equal(a.numpy("A"), b.numpy("A"))
    np.testing.assert_array_equal(a.numpy("b"), b.numpy("b"))
    assert b.attrs["chunks"] == [1001, 7]
    c = generate_problem(tmp_path / "c.zarr", 9000, 20, chunks=4096, seed=9, frac_in_range=0.7)
    assert not np.allclose(a.numpy("A"), c.numpy("A"))


def test_wide_problem_min_norm(tmp_path):
    p = generate_problem(tmp_path / "w.zarr", 50, 3000, cond=1e4, chunks=(50, 700), seed=2)
    A, b = p.numpy("A"), p.numpy("b")
    assert A.shape == (50, 3000)
    np.testing.assert_allclose(scipy.linalg.svd(A, compute_uv=False), p.s, atol=1e-14)
    x = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert np.linalg.norm(x - p.x) <= 1e-9 * np.linalg.norm(x)
    assert np.linalg.norm(A @ p.x - b) <= 1e-12 * np.linalg.norm(b)


def test_float32(tmp_path):
    p = generate_problem(tmp_path / "f.zarr", 5000, 30, cond=100, dtype="float32", seed=1)
    A = p.numpy("A")
    assert A.dtype == np.float32
    np.testing.assert_allclose(scipy.linalg.svd(A.astype(float), compute_uv=False), p.s, rtol=1e-5)


def test_singular_value_profiles():
    s = singular_values(10, cond=1e9)
    assert s[0] == 1 and s[-1] == pytest.approx(1e-9) and np.all(np.diff(np.log(s)) == pytest.approx(np.log(1e-9) / 9))
    np.testing.assert_allclose(singular_values(5, decay="poly", power=0.5), np.arange(1, 6) ** -0.5)
    np.testing.assert_array_equal(singular_values(6, decay="flat_drop", cond=10, flat=2), [1, 1, .1, .1, .1, .1])


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import distsketch.problems as P

    calls = {"n": 0}
    real = P.Gaussian.columns

    def boom(self, j0, j1, dtype=np.float64):
        calls["n"] += 1
        if calls["n"] > 6:
            raise RuntimeError("disk full")
        return real(self, j0, j1, dtype)

    monkeypatch.setattr(P.Gaussian, "columns", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_problem(tmp_path / "x.zarr", 9000, 10, chunks=1000, seed=0)
    assert not os.path.exists(tmp_path / "x.zarr")


@pytest.mark.parametrize("kw, match", [
    ({"m": 0}, "m and n must be positive"),
    ({"cond": 0.5}, "cond must be >= 1"),
    ({"rank": 100}, "rank must be between 1 and n=20"),
    ({"frac_in_range": 1.5}, r"frac_in_range must lie in \[0, 1\]"),
    ({"decay": "cubic"}, "unknown decay profile 'cubic'"),
    ({"dtype": "int8"}, "dtype must be float32 or float64"),
    ({"s": np.arange(20.0)}, "non-increasing"),
])
def test_bad_parameters(tmp_path, kw, match):
    args = {"m": 100, "n": 20, **kw}
    with pytest.raises(ParameterError, match=match):
        generate_problem(tmp_path / "bad.zarr", args.pop("m"), args.pop("n"), **args)


def test_existing_path_needs_overwrite(tmp_path):
    generate_problem(tmp_path / "e.zarr", 100, 5, seed=0)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        generate_problem(tmp_path / "e.zarr", 100, 5, seed=0)
    p = generate_problem(tmp_path / "e.zarr", 100, 5, seed=1, overwrite=True)
    assert open_problem(tmp_path / "e.zarr").seed == 1 == p.seed


@pytest.mark.parametrize("kind", ["gaussian", "sparse_sign", "srct"])
def test_sketch_with_the_problems_own_seed_is_an_embedding(tmp_path, kind):
    """The generator's Gaussian shares no draws with a sketch made with the problem's seed: under
    the Gaussian family itself its G was the leading rows of the seed-0 Gaussian sketch, and that
    sketch of A = G R^-1 diag(s) V.T had distortion ~ sqrt(m / d) (18.9 here), not ~ sqrt(n / d)."""
    import distsketch

    m, n, d = 20000, 16, 256
    p = generate_problem(str(tmp_path / "p.zarr"), m, n, cond=10.0, chunks=3000, seed=0)
    A = p.numpy("A")
    s = np.linalg.svd(A, compute_uv=False)
    for seed in (0, 1):
        SA = distsketch.sketch(A, d, kind=kind, seed=seed)
        distortion = np.max(np.abs(np.linalg.svd(SA, compute_uv=False) / s - 1))
        assert distortion < 0.6, (kind, seed, distortion)  # sqrt(n / d) = 0.25

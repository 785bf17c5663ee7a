"""Rank-revealing factorisations: CQRRPT (qrcp), interpolative decompositions, CUR.

References: LAPACK's geqp3 (``scipy.linalg.qr(pivoting=True)``), ``scipy.linalg.interpolative``
(the ID library), the SVD (best rank-k error). Backends: numpy, Dask (chunk layouts), Zarr on a
memory-limited LocalCluster, MPI (driver under mpiexec), the command line.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.linalg.interpolative as sli
import zarr

import distsketch
from distsketch.errors import ParameterError, ShapeError

EPS = np.finfo(np.float64).eps
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spectrum_matrix(m, n, s, seed=0):
    """``U diag(s) V.T`` with Haar-like orthonormal ``U`` (m x n) and ``V`` (n x n)."""
    r = np.random.default_rng(seed)
    U = np.linalg.qr(r.standard_normal((m, n)))[0]
    V = np.linalg.qr(r.standard_normal((n, n)))[0]
    return (U * s) @ V.T


def graded(m, n, cond, seed=0):
    return spectrum_matrix(m, n, np.logspace(0, -np.log10(cond), n), seed)


def decaying(m, n, rate=10.0, seed=0):
    s = np.exp(-np.arange(n) / rate)
    return spectrum_matrix(m, n, s, seed), s


def fro_rel(A, B):
    return np.linalg.norm(A - B) / np.linalg.norm(A)


# -- CQRRPT against geqp3 ----------------------------------------------------------------------------
@pytest.mark.parametrize("cond", [1.0, 1e6, 1e12])
def test_qrcp_accuracy_matches_geqp3(cond):
    m, n = 2500, 80
    A = graded(m, n, cond)
    res = distsketch.qrcp(A, seed=3)
    assert res.rank == n and res.passes == 2 and sorted(res.perm) == list(range(n))
    fact = fro_rel(A[:, res.perm], res.Q @ res.R)
    orth = np.linalg.norm(res.Q.T @ res.Q - np.eye(n))
    assert fact <= 100 * n * EPS and orth <= 100 * n * EPS, (fact, orth)
    assert np.allclose(res.R, np.triu(res.R))
    # geqp3 on the same matrix meets the same bounds (the reference the issue names)
    Q0, R0, P0 = scipy.linalg.qr(A, mode="economic", pivoting=True)
    assert fro_rel(A[:, P0], Q0 @ R0) <= 100 * n * EPS


@pytest.mark.parametrize("cond", [1e6, 1e12])
def test_rank_revealing_ratio_tracks_geqp3(cond):
    """|R_kk| / sigma_k lies as close to 1 as geqp3's: the worst deviation max(r, 1/r) over k
    is within 2x of geqp3's (measured: equal at the small end, 4.1-4.5 vs 3.4-4.4 at the large)."""
    m, n = 1500, 80
    s = np.logspace(0, -np.log10(cond), n)
    A = spectrum_matrix(m, n, s, seed=1)
    res = distsketch.qrcp(A, seed=2)
    _, R0, _ = scipy.linalg.qr(A, mode="economic", pivoting=True)

    def worst(R):
        r = np.abs(np.diag(R)) / s
        return float(np.max(np.maximum(r, 1 / r)))

    assert worst(res.R[:, :n]) <= 2 * worst(R0)


def test_exact_rank_of_rank_deficient_matrix():
    m, n, r = 1500, 90, 37
    s = np.where(np.arange(n) < r, np.logspace(0, -3, n), 0.0)
    A = spectrum_matrix(m, n, s, seed=4)  # rank r, the gap from 1e-3 to rounding (~1e-16)
    full = distsketch.qrcp(A, seed=1)
    assert full.numerical_rank == r and full.rank == r
    assert fro_rel(A[:, full.perm], full.Q @ full.R) <= 1e-12
    assert np.linalg.norm(full.Q.T @ full.Q - np.eye(r)) <= 100 * n * EPS
    noisy = A + 1e-12 * np.random.default_rng(5).standard_normal((m, n))  # noise ~5e-11 in norm
    tol = distsketch.qrcp(noisy, tol=1e-8, seed=1)
    assert tol.rank == r and distsketch.qrcp(noisy, seed=1).rank == n  # the noise is above rounding
    capped = distsketch.qrcp(A, rank=60, seed=1)
    assert capped.rank == r and "capped at the numerical rank" in capped.reason
    # the pivot columns span A's range: geqp3's numerical rank agrees
    _, R0, _ = scipy.linalg.qr(A, mode="economic", pivoting=True)
    assert np.sum(np.abs(np.diag(R0)) > max(m, n) * EPS * abs(R0[0, 0])) == r


def test_truncated_qrcp_error_estimate_tracks_true_error():
    A, s = decaying(1500, 200, rate=20)
    for rank in (10, 40):
        res = distsketch.qrcp(A, rank, seed=7)
        assert res.rank == rank and res.Q.shape == (1500, rank) and res.R.shape == (rank, 200)
        err = np.linalg.norm(A[:, res.perm] - res.Q @ res.R)
        opt = np.sqrt(np.sum(s[rank:] ** 2))
        assert opt <= err <= 5 * opt  # pivoted QR at rank k against the SVD's best
        assert 0.5 <= res.error_estimate / err <= 2.0
        assert np.linalg.norm(res.Q.T @ res.Q - np.eye(rank)) <= 100 * 200 * EPS
        # R[:, k:] is the exact projection Q.T A[:, perm[k:]]
        np.testing.assert_allclose(res.R[:, rank:], res.Q.T @ A[:, res.perm[rank:]], atol=1e-13)
    res = distsketch.qrcp(A, tol=1e-3, seed=7)
    assert fro_rel(A[:, res.perm], res.Q @ res.R) <= 2e-3


def test_small_sketch_takes_a_second_cholesky_step():
    A = graded(4000, 100, 1e12)
    res = distsketch.qrcp(A, seed=1, d=100)  # d = n: a poor embedding, cond(A_k R11^-1) ~ 1e2
    assert "two Cholesky QR steps" in res.reason and res.passes == 2
    assert np.linalg.norm(res.Q.T @ res.Q - np.eye(100)) <= 100 * 100 * EPS
    assert fro_rel(A[:, res.perm], res.Q @ res.R) <= 100 * 100 * EPS
    noq = distsketch.qrcp(A, seed=1, d=100, compute_q=False)
    assert noq.Q is None and noq.passes == 3  # the second step reads A again
    np.testing.assert_allclose(noq.R, res.R, atol=1e-12 * np.abs(res.R).max())


def test_without_q_same_r_in_two_reads():
    A = graded(2000, 50, 1e4)
    a, b = distsketch.qrcp(A, seed=5), distsketch.qrcp(A, seed=5, compute_q=False)
    assert b.Q is None and b.passes == 2 and np.array_equal(a.perm, b.perm)
    np.testing.assert_allclose(b.R, a.R, rtol=0, atol=1e-14 * np.abs(a.R).max())


def test_float32_stays_float32_and_input_not_mutated():
    A = graded(3000, 40, 1e3).astype(np.float32)
    A0 = A.copy()
    res = distsketch.qrcp(A, seed=1)
    assert res.Q.dtype == np.float32 and res.R.dtype == np.float32
    eps32 = np.finfo(np.float32).eps
    assert fro_rel(A[:, res.perm].astype(np.float64), res.Q.astype(np.float64) @ res.R) <= 100 * 40 * eps32
    assert np.linalg.norm(res.Q.T.astype(np.float64) @ res.Q - np.eye(40)) <= 100 * 40 * eps32
    assert np.array_equal(A, A0)


def test_zero_matrix_has_rank_zero():
    res = distsketch.qrcp(np.zeros((300, 12)), seed=0)
    assert res.rank == 0 and res.Q.shape == (300, 0) and res.R.shape == (0, 12)


@pytest.mark.parametrize("chunks", [(700, -1), (1250, -1), (333, -1)])
def test_qrcp_chunk_invariance(chunks):
    da = pytest.importorskip("dask.array")
    A = graded(2500, 60, 1e3, seed=9)  # Q forward error ~ eps cond(A): well-conditioned for a tight check
    ref = distsketch.qrcp(A, seed=11)
    res = distsketch.qrcp(da.from_array(A, chunks=chunks), seed=11)
    assert isinstance(res.Q, da.Array)  # lazy in, lazy out: never gathered
    assert np.array_equal(res.perm, ref.perm) and res.passes == ref.passes
    np.testing.assert_allclose(res.R, ref.R, rtol=0, atol=1e-12 * np.abs(ref.R).max())
    np.testing.assert_allclose(res.Q.compute(), ref.Q, rtol=0, atol=1e-10)


# -- interpolative decompositions and CUR -----------------------------------------------------------
def scipy_id_error(A, k):
    idx, proj = sli.interp_decomp(A, k, rand=True)
    B = sli.reconstruct_skel_matrix(A, k, idx)
    P = sli.reconstruct_interp_matrix(idx, proj)
    return np.linalg.norm(A - B @ P)


def test_column_id_against_scipy_interpolative():
    A, s = decaying(2000, 300, rate=10)
    k = 40
    ref = scipy_id_error(A, k)
    res = distsketch.interpolative(A, k, seed=0)
    assert res.passes == 1 and res.rank == k and res.X.shape == (k, 300)
    np.testing.assert_array_equal(res.X[:, res.idx], np.eye(k))
    err = np.linalg.norm(A - A[:, res.idx] @ res.X)
    assert err <= 2.5 * ref  # one read, X from the sketch (measured 2.06x of scipy here)
    assert 0.5 <= res.error_estimate / err <= 2.0
    refined = distsketch.interpolative(A, k, seed=0, refine=True)
    err2 = np.linalg.norm(A - A[:, refined.idx] @ refined.X)
    assert refined.passes == 2 and err2 <= 1.5 * ref  # least-squares X (measured 1.22x)
    assert 0.5 <= refined.error_estimate / err2 <= 2.0


@pytest.mark.parametrize("axis", ["columns", "rows"])
def test_id_is_exact_on_low_rank_matrices(axis):
    r = np.random.default_rng(3)
    A = r.standard_normal((700, 12)) @ r.standard_normal((12, 500))
    res = distsketch.interpolative(A, seed=2, axis=axis)  # neither rank nor tol: the numerical rank
    assert res.rank == 12
    approx = A[:, res.idx] @ res.X if axis == "columns" else res.X @ A[res.idx]
    assert fro_rel(A, approx) <= 1e-12
    assert res.error_estimate <= 1e-12 * res.norm_estimate


def test_row_id_accuracy_and_identity_rows():
    A, s = decaying(1500, 200, rate=10, seed=2)
    k = 30
    res = distsketch.interpolative(A, k, axis="rows", seed=4)
    assert res.passes == 1 and res.X.shape == (1500, k)
    assert np.abs(res.X[res.idx] - np.eye(k)).max() <= 1e-12
    err = np.linalg.norm(A - res.X @ A[res.idx])
    ref = scipy_id_error(A.T, k)  # a row ID of A is a column ID of A.T
    assert err <= 4 * ref
    assert 0.5 <= res.error_estimate / err <= 2.0


@pytest.mark.parametrize("axis", ["columns", "rows"])
def test_id_tolerance(axis):
    A, s = decaying(1200, 150, rate=8, seed=6)
    res = distsketch.interpolative(A, tol=1e-4, axis=axis, seed=1)
    approx = A[:, res.idx] @ res.X if axis == "columns" else res.X @ A[res.idx]
    err = fro_rel(A, approx)
    assert err <= 5e-4
    # k is no larger than needed by more than a few: the SVD needs at least k_opt columns
    k_opt = int(np.argmax(np.sqrt(np.cumsum((s**2)[::-1])[::-1]) <= 1e-4 * np.linalg.norm(s)))
    assert k_opt <= res.rank + 2 and res.rank <= k_opt + 25


def test_cur_accuracy_and_estimate():
    A, s = decaying(1500, 200, rate=10, seed=8)
    k = 30
    res = distsketch.cur(A, k, seed=5)
    assert res.passes == 2 and res.U.shape == (k, k)
    np.testing.assert_array_equal(res.C, A[:, res.cols])
    np.testing.assert_array_equal(res.R, A[res.rows])
    err = np.linalg.norm(A - A[:, res.cols] @ res.U @ A[res.rows])
    opt = np.sqrt(np.sum(s[k:] ** 2))
    assert err <= 6 * opt
    # U is the least-squares optimum for the chosen C and R (dense reference)
    C, R = A[:, res.cols], A[res.rows]
    U_opt = np.linalg.pinv(C) @ A @ np.linalg.pinv(R)
    assert err <= (1 + 1e-8) * np.linalg.norm(A - C @ U_opt @ R)
    assert 0.5 <= res.error_estimate / err <= 2.0
    r = np.random.default_rng(3)
    B = r.standard_normal((600, 9)) @ r.standard_normal((9, 400))
    exact = distsketch.cur(B, seed=1)
    assert exact.rank == 9 and fro_rel(B, B[:, exact.cols] @ exact.U @ B[exact.rows]) <= 1e-10


@pytest.mark.parametrize("chunks", [(400, -1), (1111, -1)])
def test_id_and_cur_chunk_invariance(chunks):
    da = pytest.importorskip("dask.array")
    A, _ = decaying(2500, 120, rate=8, seed=3)
    Ad = da.from_array(A, chunks=chunks)
    for axis in ("columns", "rows"):
        a, b = distsketch.interpolative(A, 20, axis=axis, seed=9), distsketch.interpolative(Ad, 20, axis=axis, seed=9)
        assert np.array_equal(a.idx, b.idx)
        np.testing.assert_allclose(np.asarray(b.X), a.X, rtol=0, atol=1e-10 * np.abs(a.X).max())
    a, b = distsketch.cur(A, 20, seed=9), distsketch.cur(Ad, 20, seed=9)
    assert isinstance(b.C, da.Array)
    assert np.array_equal(a.cols, b.cols) and np.array_equal(a.rows, b.rows)
    np.testing.assert_allclose(b.U, a.U, rtol=0, atol=1e-8 * np.abs(a.U).max())


# -- bad input ---------------------------------------------------------------------------------------------
A_OK = np.random.default_rng(0).standard_normal((50, 8))


@pytest.mark.parametrize("call, exc, match", [
    # a wide matrix has no tall QR: the message says what to do instead
    (lambda: distsketch.qrcp(np.ones((5, 8))), ShapeError, r"tall matrix \(m >= n\); got shape \(5, 8\)"),
    (lambda: distsketch.qrcp(np.ones((0, 3))), ShapeError, r"A is empty \(shape \(0, 3\)\)"),
    (lambda: distsketch.qrcp(A_OK, 3, tol=0.1), ParameterError, "at most one of rank and tol; got both"),
    (lambda: distsketch.qrcp(A_OK, 9), ParameterError, r"rank must be an integer in \[1, n=8\]; got 9"),
    (lambda: distsketch.qrcp(A_OK, 2.5), ParameterError, "rank must be an integer"),
    (lambda: distsketch.qrcp(A_OK, tol=1.5), ParameterError, r"tol is a relative Frobenius error in \(0, 1\)"),
    (lambda: distsketch.qrcp(A_OK, kind="uniform"), ParameterError, "kind must be one of 'sparse_sign'"),
    (lambda: distsketch.qrcp(A_OK, d=60), ParameterError, r"d \(sketch rows\) must be an integer in"),
    (lambda: distsketch.qrcp(A_OK, 4, d=3), ParameterError, r"d \(sketch rows\) must be an integer in"),
    (lambda: distsketch.qrcp(A_OK, 2, d=7), ParameterError, r"d \(sketch rows\) must be an integer in \[n=8"),
    (lambda: distsketch.interpolative(A_OK, 3, axis="diagonal"), ParameterError, "axis must be 'columns' or 'rows'"),
    (lambda: distsketch.interpolative(A_OK, 0), ParameterError, r"rank must be an integer in \[1, min\(m, n\)=8\]"),
    (lambda: distsketch.interpolative(A_OK, 3, n_oversamples=-1), ParameterError, "n_oversamples must be a non-neg"),
    (lambda: distsketch.interpolative(A_OK, 3, kind="fft"), ParameterError, "kind must be one of"),
    (lambda: distsketch.cur(A_OK, 3, tol=0.1), ParameterError, "at most one of rank and tol"),
    (lambda: distsketch.cur(np.ones((4, 0))), ShapeError, "A is empty"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- out of core, MPI, command line -----------------------------------------------------------------------
LIMIT = 160 * 2**20  # bytes per worker; the matrix below is 1.15x that (and ~2.5x what a worker has above its imports)


@pytest.mark.slow
@pytest.mark.cluster
def test_qrcp_out_of_core_under_worker_memory_limit(tmp_path):
    from distributed import Client, LocalCluster

    m, n, k = 360_000, 64, 16
    rng = np.random.default_rng(1)
    z = zarr.create_array(str(tmp_path / "A.zarr"), shape=(m, n), chunks=(8192, n), dtype="f8")
    W = rng.standard_normal((n, n)) * np.exp(-np.arange(n) / 4)[:, None]
    for r0 in range(0, m, 65536):  # written in slabs: the test process never holds A either
        z[r0:r0 + 65536] = rng.standard_normal((min(65536, m - r0), n)) @ W
    assert z.nbytes > LIMIT
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=LIMIT,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        res = distsketch.qrcp(str(tmp_path / "A.zarr"), k, seed=3)
        # Q stays distributed: checked through a reduction and two row slices, never gathered whole
        QtQ = (res.Q.T @ res.Q).compute()
        Qs = [res.Q[r0:r0 + 20_000].compute() for r0 in (0, 300_000)]
        cur = distsketch.cur(str(tmp_path / "A.zarr"), 8, seed=3)
        Cs = cur.C[100_000:120_000].compute()
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
    # reference: the same algorithm in process, on A read slab by slab into memory
    A = z[...]
    ref = distsketch.qrcp(A, k, seed=3)
    assert res.passes == 2 and np.array_equal(res.perm, ref.perm)
    np.testing.assert_allclose(res.R, ref.R, rtol=0, atol=1e-10 * np.abs(ref.R).max())
    for Qi, r0 in zip(Qs, (0, 300_000)):
        np.testing.assert_allclose(Qi, ref.Q[r0:r0 + 20_000], rtol=0, atol=1e-9)
    assert np.linalg.norm(QtQ - np.eye(k)) <= 100 * n * EPS
    np.testing.assert_array_equal(Cs, A[100_000:120_000, cur.cols])
    assert np.array_equal(cur.rows, distsketch.cur(A, 8, seed=3).rows)


@pytest.mark.mpi
def test_qrcp_mpi_driver_matches_numpy(tmp_path):
    pytest.importorskip("mpi4py")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    A = graded(30_000, 40, 1e6, seed=12)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=A.shape, chunks=(4000, 40), dtype="f8")[...] = A
    cmd = [mpiexec, "-n", "2", sys.executable, os.path.join(ROOT, "drivers", "qrcp.py"), str(tmp_path / "a.zarr"),
           "--out", str(tmp_path / "qr.zarr"), "--seed", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)
    ref = distsketch.qrcp(A, seed=3)
    g = zarr.open_group(str(tmp_path / "qr.zarr"), mode="r")
    assert meta["passes"] == ref.passes == 2 and meta["rank"] == ref.rank == 40
    assert np.array_equal(g["perm"][...], ref.perm)
    np.testing.assert_allclose(g["R"][...], ref.R, rtol=0, atol=1e-12 * np.abs(ref.R).max())
    np.testing.assert_allclose(g["Q"][...], ref.Q, rtol=0, atol=1e-10)


@pytest.mark.cluster
def test_qrcp_command(tmp_path):
    A = graded(20_000, 30, 1e8, seed=13)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=A.shape, chunks=(3000, 30), dtype="f8")[...] = A
    cli = [sys.executable, "-m", "distsketch.cli"]
    p = subprocess.run([*cli, "qrcp", str(tmp_path / "a.zarr"), "--out", str(tmp_path / "qr.zarr"), "--seed", "2",
                        "--workers", "2", "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)
    assert meta["rank"] == 30 and meta["passes"] == 2
    g = zarr.open_group(str(tmp_path / "qr.zarr"), mode="r")
    Q, R, perm = g["Q"][...], g["R"][...], g["perm"][...]
    assert fro_rel(A[:, perm], Q @ R) <= 100 * 30 * EPS and np.linalg.norm(Q.T @ Q - np.eye(30)) <= 100 * 30 * EPS
    ref = distsketch.qrcp(A, seed=2)
    assert np.array_equal(perm, ref.perm)
    zarr.create_array(str(tmp_path / "w.zarr"), shape=(10, 30), chunks=(10, 30), dtype="f8")[...] = 1.0
    p = subprocess.run([*cli, "qrcp", str(tmp_path / "w.zarr"), "--out", str(tmp_path / "w-qr.zarr"), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "qrcp needs a tall matrix (m >= n); got shape (10, 30)" in p.stderr


MPI_ID_SCRIPT = """
import json, sys
import numpy as np
from mpi4py import MPI
import distsketch
from distsketch.backends.mpi import MPIRowData
comm = MPI.COMM_WORLD
out = {}
for axis in ("columns", "rows"):
    data = MPIRowData.from_zarr(sys.argv[1], comm)
    res = distsketch.interpolative(data, 12, axis=axis, seed=4)
    X = data.gather(res.X) if axis == "rows" else res.X
    out[axis] = {"idx": res.idx.tolist(), "X": np.asarray(X).tolist(), "passes": res.passes}
data = MPIRowData.from_zarr(sys.argv[1], comm)
res = distsketch.cur(data, 12, seed=4)
out["cur"] = {"cols": res.cols.tolist(), "rows": res.rows.tolist(), "U": res.U.tolist(), "passes": res.passes}
if comm.rank == 0:
    print(json.dumps(out))
"""


@pytest.mark.mpi
def test_id_and_cur_under_mpi_match_numpy(tmp_path):
    pytest.importorskip("mpi4py")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    A, _ = decaying(9_000, 60, rate=6, seed=14)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=A.shape, chunks=(1000, 60), dtype="f8")[...] = A
    (tmp_path / "run.py").write_text(MPI_ID_SCRIPT)
    p = subprocess.run([mpiexec, "-n", "2", sys.executable, str(tmp_path / "run.py"), str(tmp_path / "a.zarr")],
                       capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    for axis in ("columns", "rows"):
        ref = distsketch.interpolative(A, 12, axis=axis, seed=4)
        assert out[axis]["idx"] == ref.idx.tolist() and out[axis]["passes"] == ref.passes == 1
        np.testing.assert_allclose(np.array(out[axis]["X"]), ref.X, rtol=0, atol=1e-10 * np.abs(ref.X).max())
    ref = distsketch.cur(A, 12, seed=4)
    assert out["cur"]["cols"] == ref.cols.tolist() and out["cur"]["rows"] == ref.rows.tolist()
    assert out["cur"]["passes"] == ref.passes == 2
    np.testing.assert_allclose(np.array(out["cur"]["U"]), ref.U, rtol=0, atol=1e-8 * np.abs(ref.U).max())


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_qrcp_id_cur_at_extreme_scales_match_the_unscaled(scale):
    """Squared norms of a 1e+-200 sketch under- or overflowed: qrcp(tol) chose rank 0 with an
    infinite estimate, interpolative and cur reported an error estimate of 0 for a true 0.58. Their
    first sketch out of range now redoes the reads on 2^-e A (exact) and maps the result back."""
    A = np.random.default_rng(0).standard_normal((400, 50)) * np.logspace(0, -2, 50)
    As = A * scale
    for f in (lambda M: distsketch.qrcp(M, tol=0.01, seed=0), lambda M: distsketch.qrcp(M, 10, seed=0)):
        r1, rs = f(A), f(As)
        assert rs.rank == r1.rank and np.array_equal(rs.perm, r1.perm), (rs.rank, r1.rank, rs.reason)
        assert rs.error_estimate == pytest.approx(r1.error_estimate * scale, rel=1e-6)
        np.testing.assert_allclose(rs.R, r1.R * scale, rtol=1e-6, atol=1e-8 * abs(r1.R).max() * scale)
        assert "out of range" in rs.reason
    for axis in ("columns", "rows"):
        for kw in ({"tol": 0.01}, {"rank": 10}):
            r1 = distsketch.interpolative(A, seed=0, axis=axis, **kw)
            rs = distsketch.interpolative(As, seed=0, axis=axis, **kw)
            assert rs.rank == r1.rank and np.array_equal(rs.idx, r1.idx), (axis, kw, rs.rank, r1.rank)
            # (rows with tol: rank 50 = n, an estimate at the rounding floor, which A * scale rounds apart)
            assert rs.error_estimate == pytest.approx(r1.error_estimate * scale, rel=1e-6, abs=1e-12 * rs.norm_estimate)
            assert rs.norm_estimate == pytest.approx(r1.norm_estimate * scale, rel=1e-6)
    r1, rs = distsketch.cur(A, 10, seed=0), distsketch.cur(As, 10, seed=0)
    assert np.array_equal(rs.cols, r1.cols) and np.array_equal(rs.rows, r1.rows)
    np.testing.assert_allclose(np.asarray(rs.C), A[:, rs.cols] * scale, rtol=0)
    np.testing.assert_allclose(rs.R, A[rs.rows] * scale, rtol=0)
    np.testing.assert_allclose(rs.U, r1.U / scale, rtol=1e-6)
    assert rs.error_estimate == pytest.approx(r1.error_estimate * scale, rel=1e-6)


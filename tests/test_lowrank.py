"""Low-rank drivers against scipy.linalg.svd on fast, slow (i^-0.5) and flat-then-drop spectra,
numpy and three dask layouts; tolerance mode; single-pass bound; Nystrom; bad input."""

import dask.array as da
import numpy as np
import pytest
import scipy.linalg

import distsketch
from distsketch.errors import NonFiniteError, ParameterError, ShapeError
from distsketch.problems import singular_values

M, N, K = 3000, 300, 15


def make(spectrum, m=M, n=N, seed=0):
    rng = np.random.default_rng(seed)
    if spectrum == "fast":
        s = 0.8 ** np.arange(n)
    elif spectrum == "slow":
        s = np.arange(1, n + 1) ** -0.5
    else:  # flat then drop
        s = singular_values(n, decay="flat_drop", flat=K, cond=1e3)
    U = np.linalg.qr(rng.standard_normal((m, n)))[0]
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return (U * s) @ V.T


LAYOUTS = ["numpy", ("rows", (700, N)), ("cols", (M, 100)), ("2d", (1100, 130))]


def layout(A, lay):
    if lay == "numpy":
        return A
    return da.from_array(A, chunks=lay[1])


def lay_id(lay):
    return lay if isinstance(lay, str) else lay[0]


@pytest.fixture(scope="module", params=["fast", "slow", "flat_drop"])
def spectrum(request):
    A = make(request.param)
    U, s, Vt = scipy.linalg.svd(A, full_matrices=False)
    return request.param, A, s


@pytest.mark.parametrize("lay", LAYOUTS, ids=lay_id)
@pytest.mark.parametrize("method", ["rsvd", "block_krylov", "auto"])
def test_near_optimal_against_lapack(spectrum, lay, method):
    name, A, s = spectrum
    opt = np.sqrt(np.sum(s[K:] ** 2))
    res = distsketch.svd(layout(A, lay), K, method=method, seed=3)
    U, Vt = np.asarray(res.U), np.asarray(res.Vt)
    if lay != "numpy":
        assert isinstance(res.U, da.Array)
    err = np.linalg.norm(A - (U * res.s) @ Vt)
    assert err / opt <= 1.1, (name, err / opt)
    # singular values to a stated accuracy: within 3e-2 sigma_1 at the auto iteration count, which aims at
    # the Frobenius error (slow decay is the hard case: measured 1.5e-2 here); 1e-6 sigma_1 otherwise
    tol_s = 3e-2 * s[0] if name == "slow" else 1e-6 * s[0]
    assert np.max(np.abs(res.s - s[:K])) <= tol_s, (name, np.max(np.abs(res.s - s[:K])))
    np.testing.assert_allclose(U.T @ U, np.eye(K), atol=1e-12)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(K), atol=1e-12)
    # the a-posteriori estimate (||A||_F^2 - sum s_i^2) tracks the true error
    assert 0.5 <= res.error_estimate / err <= 2.0
    # q + 1 reads (B = W R^-1 from the last read's A.T Y); q + 2 when the basis was too ill-conditioned
    # for that and the reason says a last read formed B
    last_read = "formed by a last read" in res.reason
    assert res.passes == res.n_power_iter + 1 + last_read, (res.passes, res.reason)


def test_wide_matrix():
    A = make("fast").T.copy()  # 300 x 3000
    for Ain in (A, da.from_array(A, chunks=(100, 700))):
        res = distsketch.svd(Ain, K, seed=1)
        U, Vt = np.asarray(res.U), np.asarray(res.Vt)
        assert U.shape == (300, K) and Vt.shape == (K, 3000)
        s = scipy.linalg.svd(A, compute_uv=False)
        assert np.linalg.norm(A - (U * res.s) @ Vt) <= 1.1 * np.sqrt(np.sum(s[K:] ** 2))


@pytest.mark.parametrize("tol", [0.3, 0.05])
def test_tolerance_mode(tol):
    A = make("slow")
    res = distsketch.svd(da.from_array(A, chunks=(500, N)), tol=tol, seed=0)
    U, Vt = np.asarray(res.U), np.asarray(res.Vt)
    err = np.linalg.norm(A - (U * res.s) @ Vt)
    fro = np.linalg.norm(A)
    assert err <= tol * fro * 1.0001
    assert 0.5 <= res.error_estimate / err <= 2.0
    # not wastefully large: within a few columns of the optimal rank for this tolerance
    s = scipy.linalg.svd(A, compute_uv=False)
    k_opt = int(np.argmax(np.sqrt(np.maximum(fro**2 - np.cumsum(s**2), 0)) <= tol * fro)) + 1
    assert k_opt <= res.rank <= int(1.5 * k_opt) + 10


def test_qb_error_history():
    A = make("slow")
    res = distsketch.qb(A, tol=0.2, seed=0, block_size=10)
    Q = np.asarray(res.Q)
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-12)
    np.testing.assert_allclose(res.B, Q.T @ A, atol=1e-12)
    true = np.linalg.norm(A - Q @ res.B)
    assert abs(res.error_estimate - true) <= 1e-6 * np.linalg.norm(A)
    errs = [h["error_estimate"] for h in res.history]
    assert all(b <= a for a, b in zip(errs, errs[1:]))
    # one read per block plus one
    assert res.passes == len(res.history) + 1


def test_single_pass_reads_once_and_meets_its_bound():
    """Tropp-Yurtsever-Udell-Cevher (SIMAX 2017), Thm 4.3 and 5.1: with range sketch l, co-range
    sketch l2, E||A - Q X||_F^2 <= (1 + f(l, l2)) min_{r < l-1} (1 + f(r, l)) tau_{r+1}^2,
    f(s, t) = s / (t - s - 1), and the rank-k truncation is within tau_{k+1} + 2 ||A - Q X||_F."""
    from .test_passes import CountingArray

    A = make("slow")
    s = scipy.linalg.svd(A, compute_uv=False)
    l, l2 = K + 10, 2 * (K + 10) + 1
    f = lambda a, b: a / (b - a - 1)  # noqa: E731
    tau2 = lambda r: np.sum(s[r:] ** 2)  # noqa: E731
    bound_full = (1 + f(l, l2)) * min((1 + f(r, l)) * tau2(r) for r in range(1, l - 1))
    errs = []
    for seed in range(6):
        counted = CountingArray(A)
        Ad = da.from_array(counted, chunks=(500, N), asarray=False)
        counted.reads = 0
        res = distsketch.svd(Ad, K, method="single_pass", seed=seed)
        assert res.passes == 1 and counted.reads == 6  # six chunks, each read once
        U, Vt = np.asarray(res.U), np.asarray(res.Vt)
        err = np.linalg.norm(A - (U * res.s) @ Vt)
        errs.append(err)
        assert err <= np.sqrt(tau2(K)) + 2 * np.sqrt(2 * bound_full)  # per seed, with a 2x slack on the mean
        assert 0.5 <= res.error_estimate / err <= 2.0
    assert np.mean(np.square(errs)) <= (np.sqrt(tau2(K)) + 2 * np.sqrt(bound_full)) ** 2


def test_nystrom_psd():
    rng = np.random.default_rng(2)
    n = 800
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = 0.7 ** np.arange(n)
    A = (V * lam) @ V.T
    A = (A + A.T) / 2
    for Ain in (A, da.from_array(A, chunks=(300, 800))):
        res = distsketch.nystrom(Ain, 20, seed=0, n_power_iter=0)
        U = np.asarray(res.U)
        assert res.passes == 1 and res.n_power_iter == 0
        np.testing.assert_allclose(U.T @ U, np.eye(20), atol=1e-12)
        # A - A_hat is PSD for Nystrom, so its nuclear norm is its trace; Gittens & Mahoney (2016) and
        # Tropp et al. (2017): E ||A - A_hat||_* <= (1 + k/(p-1)) sum_{j>k} lam_j, here k = 20, p = 10
        E = A - (U * res.lam) @ U.T
        assert np.linalg.eigvalsh((E + E.T) / 2).min() >= -1e-12
        assert np.trace(E) <= 2 * (1 + 20 / 9) * np.sum(lam[20:])
        # eigenvalues from below, within that trace error
        assert np.all(res.lam <= lam[:20] * (1 + 1e-12)) and np.all(lam[:20] - res.lam <= np.trace(E))


def test_out_of_core_rank50(tmp_path):
    """Rank-50 SVD of a Zarr matrix 4x a worker's memory limit: no restart, near-optimal."""
    import logging

    from distributed import Client, LocalCluster

    from distsketch.problems import generate_problem

    limit = 400 * 2**20  # peak use measured here: ~200 MB (rsvd) to ~290 MB (block Krylov) a worker
    # 105,000 x 2,000 (1.68 GB, 4.0x the limit) in 16 MB chunks; an m x 60 block is 50 MB in all
    p = generate_problem(tmp_path / "a.zarr", 105_000, 2000, decay="poly", power=1.0, chunks=1024, seed=1)
    assert p.shape[0] * p.shape[1] * 8 >= 4 * limit
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=limit, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        before = set(client.scheduler_info(n_workers=-1)["workers"])
        res = distsketch.svd(f"{p.path}/A", 50, seed=0)
        assert set(client.scheduler_info(n_workers=-1)["workers"]) == before
        assert isinstance(res.U, da.Array)
        U = res.U.compute()
    # exact singular values from the generator
    assert np.max(np.abs(res.s - p.s[:50])) <= 1e-2 * p.s[0]
    np.testing.assert_allclose(U.T @ U, np.eye(50), atol=1e-12)
    opt = np.sqrt(np.sum(p.s[50:] ** 2))
    assert res.error_estimate <= 1.1 * opt


@pytest.mark.parametrize("kw, exc, match", [
    ({"rank": 0}, ParameterError, r"rank must be an integer in \[1, min\(m, n\)=300\]; got 0"),
    ({"rank": 301}, ParameterError, "got 301"),
    ({"rank": 5, "tol": 0.1}, ParameterError, "give exactly one of rank and tol; got both"),
    ({}, ParameterError, "got neither"),
    ({"tol": 0.0}, ParameterError, r"tol is a relative Frobenius error .* in \(0, 1\); got 0.0"),
    ({"tol": -1.0}, ParameterError, "tol is a relative"),
    ({"rank": 5, "method": "lanczos"}, ParameterError, "unknown method 'lanczos'"),
    ({"rank": 5, "n_power_iter": -1}, ParameterError, "n_power_iter must be a non-negative integer"),
    ({"rank": 5, "n_power_iter": 2.0}, ParameterError, "n_power_iter must be a non-negative integer"),  # was a
    ({"rank": 5, "n_power_iter": True}, ParameterError, "n_power_iter must be a non-negative integer"),  # TypeError
    ({"rank": True}, ParameterError, "rank must be an integer"),  # after the first read / taken as 1
    ({"rank": 5, "n_oversamples": -5}, ParameterError, "n_oversamples must be a non-negative integer"),
    ({"rank": 5, "power_iteration_normalizer": "SVD"}, ParameterError, "power_iteration_normalizer must be"),
])
def test_bad_input(kw, exc, match):
    A = make("fast")
    with pytest.raises(exc, match=match):
        distsketch.svd(A, **kw)


def test_nonfinite_and_nonsymmetric():
    A = make("fast")
    A[123, 45] = np.nan
    with pytest.raises(NonFiniteError, match="row 123, column 45"):
        distsketch.svd(A, 5)
    B = np.random.default_rng(0).standard_normal((200, 200))
    with pytest.raises(ParameterError, match=r"nystrom needs a symmetric positive semidefinite matrix, but A\["):
        distsketch.nystrom(B, 5)
    with pytest.raises(ShapeError, match=r"square symmetric matrix; got shape \(200, 100\)"):
        distsketch.nystrom(B[:, :100], 5)


# --- one vocabulary: rank, n_power_iter, dtypes ---------------------------------------------------
def _psd(lam, seed=0):
    n = len(lam)
    V = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    A = (V * lam) @ V.T
    return (A + A.T) / 2


def test_nystrom_power_iterations_fix_slowly_decaying_spectra():
    """Without iterations the top eigenvalues of a j^-1/2 spectrum come out tens of percent low;
    q power iterations (q + 1 reads) bring them within 4% of LAPACK's (scipy.linalg.eigh), the
    largest within 0.1%."""
    n, k = 600, 10
    A = _psd(np.arange(1, n + 1) ** -0.5)
    ref = scipy.linalg.eigh(A, eigvals_only=True)[::-1][:k]
    plain = distsketch.nystrom(A, k, n_power_iter=0, seed=0)
    assert plain.passes == 1 and np.max((ref - plain.lam) / ref) > 0.2
    for q in (2, "auto"):
        res = distsketch.nystrom(A, rank=k, n_power_iter=q, seed=0)
        assert res.n_power_iter >= 2 and res.passes == res.n_power_iter + 1, (q, res.passes)
        np.testing.assert_allclose(res.lam, ref, rtol=0.04)
        np.testing.assert_allclose(res.lam[0], ref[0], rtol=1e-3)
        assert np.max((ref - res.lam) / ref) < np.max((ref - plain.lam) / ref) / 10
        assert np.all(res.lam <= ref * (1 + 1e-10))  # estimates from below
        U = np.asarray(res.U)
        np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)


def test_qb_power_iterations_lower_the_error_and_count_their_reads():
    A = make("slow", m=1000, n=200)
    sref = np.linalg.svd(A, compute_uv=False)
    opt = np.sqrt(np.sum(sref[20:] ** 2))
    errs = {}
    for q in (0, 1, 2):
        res = distsketch.qb(A, 20, block_size=10, n_power_iter=q, seed=0)
        err = np.linalg.norm(A - res.Q @ res.B)
        errs[q] = err / opt
        blocks = len(res.history)
        assert res.passes == 1 + blocks * (1 + (q + 1 if q else 0)), (q, res.passes)
        assert abs(res.error_estimate - err) <= 1e-6 * np.linalg.norm(A)
        np.testing.assert_allclose(res.Q.T @ res.Q, np.eye(20), atol=1e-12)
    assert errs[2] < errs[1] < errs[0] and errs[2] < 1.05, errs


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_float32_in_float32_out(kind):
    """As scikit-learn's randomized_svd: float32 data gives float32 factors, accurate to float32."""
    A64 = make("fast", m=1000, n=150)
    P64 = _psd(0.8 ** np.arange(200))
    A32, P32 = A64.astype(np.float32), P64.astype(np.float32)
    if kind == "dask":
        A32, P32 = da.from_array(A32, chunks=(300, 150)), da.from_array(P32, chunks=(70, 200))
    s_ref = np.linalg.svd(A64, compute_uv=False)[:8]
    r = distsketch.svd(A32, 8, seed=0)
    q = distsketch.qb(A32, 8, seed=0)
    ny = distsketch.nystrom(P32, 8, seed=0)
    for x in (r.U, r.s, r.Vt, q.Q, q.B, ny.U, ny.lam):
        assert x.dtype == np.float32
    assert isinstance(r.U, da.Array) == (kind == "dask") and isinstance(ny.U, da.Array) == (kind == "dask")
    np.testing.assert_allclose(r.s, s_ref, rtol=1e-4)
    np.testing.assert_allclose(ny.lam, np.linalg.eigvalsh(P64)[::-1][:8], rtol=1e-4)
    U = np.asarray(r.U, dtype=np.float64)
    np.testing.assert_allclose(U.T @ U, np.eye(8), atol=1e-5)


def test_rank_is_positional_or_keyword_everywhere():
    A = make("fast", m=600, n=100)
    P = _psd(0.8 ** np.arange(100))
    for f, X in ((distsketch.svd, A), (distsketch.qb, A), (distsketch.nystrom, P)):
        a, b = f(X, 6, seed=1), f(X, rank=6, seed=1)
        for name in ("s", "B", "lam"):
            if hasattr(a, name):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("call, match", [
    (lambda A, P: distsketch.qb(A, 5, n_power_iter=-1), r"n_power_iter must be a non-negative integer; got -1"),
    (lambda A, P: distsketch.qb(A, 5, n_power_iter="auto"), r"non-negative integer; got 'auto'"),
    (lambda A, P: distsketch.nystrom(P, 5, n_power_iter=1.5), r"non-negative integer or 'auto'; got 1.5"),
    (lambda A, P: distsketch.qb(A, 5, block_size=0), r"block_size must be a positive integer .*; got 0"),
    (lambda A, P: distsketch.qb(A, tol=0.1, max_rank=0), r"max_rank must be a positive integer .*; got 0"),
])
def test_bad_power_iterations(call, match):
    with pytest.raises(ParameterError, match=match):
        call(np.random.default_rng(0).standard_normal((50, 20)), np.eye(30))


def test_mpi_backend_low_rank_matches_numpy():
    """svd, qb and nystrom on the MPI backend (COMM_SELF: one rank holding every row) give the numpy
    results: the same streams, and the factors come back as the rank's rows."""
    pytest.importorskip("mpi4py")
    from mpi4py import MPI

    from distsketch.backends import MPIRowData

    A = make("fast", m=1000, n=100)
    P = _psd(0.8 ** np.arange(150))
    for f, X in ((distsketch.svd, A), (distsketch.qb, A), (distsketch.nystrom, P)):
        ref = f(X, 6, seed=3)
        got = f(MPIRowData(X, 0, X.shape[0], MPI.COMM_SELF), 6, seed=3)
        for name in ("U", "s", "Q", "B", "lam"):
            if hasattr(ref, name):
                np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(ref, name)),
                                           rtol=1e-10, atol=1e-12, err_msg=f"{f.__name__}.{name}")
    with pytest.raises(ShapeError, match=r"cannot hold its transpose"):
        distsketch.svd(MPIRowData(A.T.copy(), 0, A.shape[1], MPI.COMM_SELF), 3)


def test_lowrank_asks_nothing_of_the_backend():
    """lowrank/ imports neither dask nor a backend module nor a private input helper (nor another
    driver's private modules) and never inspects its input's type: it holds a RowData
    (distsketch.backends.as_rowdata) and uses the protocol's methods only. Its kernels live in
    passes.py: no Kernel is declared in lowrank/."""
    import ast
    import pathlib

    root = pathlib.Path(distsketch.__file__).parent / "lowrank"
    paths = sorted(root.glob("*.py"))
    assert {"_svd.py", "_orth.py", "_qrcp.py", "_interp.py"} <= {p.name for p in paths}
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")] + [
                    f"{'.' * node.level}{node.module or ''}.{a.name}" for a in node.names]
            else:
                names = []
            for name in names:
                assert not name.split(".")[0] == "dask", (path.name, name)
                assert "backends." not in name.replace("backends.as_rowdata", "").replace(
                    "backends.pow2_scale", ""), (path.name, name)
                assert not name.endswith(("is_lazy", "as_matrix")), (path.name, name)
                parts = name.lstrip(".").split(".")
                assert "_inputs" not in parts and "solve" not in parts, (path.name, name)
                assert not name.endswith((".Kernel", "passes.Kernel")), (path.name, name)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Kernel":
                raise AssertionError(f"{path.name}:{node.lineno}: a Kernel declared outside passes.py")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr", "isinstance"):
                call = ast.unparse(node)  # isinstance on its own arguments (a list of blocks, an int) is fine
                assert node.func.id == "isinstance" and not any(
                    w in call for w in ("RowData", "Array", "ndarray", "da.")), f"{path.name}:{node.lineno}: {call}"


def test_docstring_examples_run():
    """The Examples of svd, qb and nystrom are run (and checked) here."""
    import doctest

    from distsketch.lowrank import _svd

    res = doctest.testmod(_svd)
    assert res.failed == 0 and res.attempted >= 15, res


_MPI_SCRIPT = r'''
import sys
import numpy as np
from mpi4py import MPI
import distsketch
from distsketch.backends import MPIRowData
from distsketch.backends.mpi import row_range

comm = MPI.COMM_WORLD
rng = np.random.default_rng(0)
A = rng.standard_normal((900, 60)) * 0.8 ** np.arange(60)
V = np.linalg.qr(rng.standard_normal((300, 300)))[0]
P = (V / np.arange(1, 301)) @ V.T
P = (P + P.T) / 2
for f, X, names in ((distsketch.svd, A, ("U", "s")), (distsketch.qb, A, ("Q", "B")),
                    (distsketch.nystrom, P, ("U", "lam"))):
    r0, r1 = row_range(X.shape[0], comm.size, comm.rank, 64)
    got = f(MPIRowData(X[r0:r1], r0, X.shape[0], comm), 5, seed=1)
    ref = f(X, 5, seed=1)
    tall, small = (getattr(got, n) for n in names)
    # the tall factor comes back as this rank's rows; the small one whole on every rank
    np.testing.assert_allclose(tall, np.asarray(getattr(ref, names[0]))[r0:r1], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(small, getattr(ref, names[1]), rtol=1e-9, atol=1e-11)
    assert got.passes == ref.passes, (f.__name__, got.passes, ref.passes)
print("ok", comm.rank)
'''


@pytest.mark.mpi
def test_mpi_two_ranks_low_rank_matches_numpy(tmp_path):
    """svd, qb and nystrom on two MPI ranks (peek, distribute and output across ranks) equal numpy."""
    pytest.importorskip("mpi4py")
    import os
    import subprocess
    import sys

    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.skip("mpiexec not installed")
    script = tmp_path / "lowrank_mpi.py"
    script.write_text(_MPI_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(distsketch.__file__))]
                                          + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    p = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    # two ranks share stdout: their lines can interleave ("okok"), so split on the word itself
    assert sorted(p.stdout.replace("ok", " ok ").split()) == ["0", "1", "ok", "ok"]


def test_float32_frobenius_norm_and_first_gram_in_float64():
    """float32 data: ||A||_F^2 was summed in float32 (1e-6 relative), so tol mode stopped at rank 6
    with an error estimate of 0 for a true relative error of 1.1e-3, and the first Gram of a float32
    Y was formed in float32 (a raw LinAlgError on exactly low-rank input)."""
    rng = np.random.default_rng(0)
    L = rng.standard_normal((5000, 5)) @ rng.standard_normal((5, 500)) + 3.0
    N = rng.standard_normal((5000, 500))
    A32 = (L + 1e-3 * np.linalg.norm(L) / np.linalg.norm(N) * N).astype(np.float32)
    Ad = A32.astype(np.float64)
    nA = np.linalg.norm(Ad)
    r = distsketch.svd(A32, tol=9e-4, seed=0)
    true = np.linalg.norm(Ad - (r.U.astype(np.float64) * r.s) @ r.Vt) / nA
    assert true <= 9e-4 * 1.05 and r.error_estimate / nA == pytest.approx(true, rel=0.05), (r.rank, true)
    r = distsketch.svd(A32, 6, method="rsvd", seed=0)
    true = np.linalg.norm(Ad - (r.U.astype(np.float64) * r.s) @ r.Vt) / nA
    assert r.error_estimate / nA == pytest.approx(true, rel=0.05)
    B32 = (rng.standard_normal((1000, 5)) @ rng.standard_normal((5, 100))).astype(np.float32)
    for res in (distsketch.svd(B32, 5, method="single_pass", seed=0), distsketch.qb(B32, 20, seed=0)):
        assert res.error_estimate <= 1e-3 * np.linalg.norm(B32.astype(np.float64))


def test_nystrom_psd_to_rounding_asymmetric_and_indefinite():
    """A PSD matrix with -5e-16 rounding eigenvalues failed the Cholesky (raw LinAlgError) at the old
    shift eps ||Y||_F; an asymmetry outside the three compared blocks was accepted; a clearly
    indefinite A gave a raw LinAlgError."""
    rng = np.random.default_rng(0)
    n = 500
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    S = (V * np.r_[np.linspace(1, 0.1, 10), -5e-16 * np.ones(n - 10)]) @ V.T
    S = (S + S.T) / 2
    for seed in range(3):
        r = distsketch.nystrom(S, 5, seed=seed)
        np.testing.assert_allclose(r.lam, np.linspace(1, 0.1, 10)[:5], rtol=1e-6)
    T = (V * np.linspace(1, 0.01, n)) @ V.T
    T = (T + T.T) / 2
    T[300, 10] += 1.0
    with pytest.raises(ParameterError, match="nystrom needs a symmetric A"):
        distsketch.nystrom(T, 5, seed=0)
    with pytest.raises(ParameterError, match="nystrom needs a positive semidefinite A"):
        distsketch.nystrom(-(V * np.linspace(1, 0.01, n)) @ V.T, 5, n_power_iter=0, seed=0)
    with pytest.raises(ParameterError, match="n_oversamples must be a non-negative integer; got -5"):
        distsketch.nystrom(S, 5, n_oversamples=-5)


def test_svd_tol_below_the_qb_floor_says_it_was_not_reached():
    """tol below sqrt(100 eps): the QB stops where rounding hides the rest, and the reason says the
    tolerance was not reached (it said only "rank 128 kept")."""
    A = (np.random.default_rng(0).standard_normal((400, 150)) * np.exp(-np.arange(150) / 6.0))
    r = distsketch.svd(A, tol=1e-12, seed=0)
    assert "tol NOT reached" in r.reason and r.error_estimate > 1e-12 * r.norm_fro, r.reason
    assert "NOT" not in distsketch.svd(A, tol=1e-3, seed=0).reason



@pytest.mark.parametrize("lay", ["numpy", ("rows", (700, N))], ids=lay_id)
@pytest.mark.parametrize("method, q", [("block_krylov", 2), ("rsvd", 2), ("block_krylov", 0)])
def test_ritz_in_the_basis_matches_the_orthonormalised_basis(monkeypatch, lay, method, q):
    """The SVD taken in the well-conditioned basis Y itself (one pass over Y) against the
    CholeskyQR2 path (which the test forces by allowing no condition number) and LAPACK."""
    from distsketch.lowrank import _svd

    A = make("slow")
    s_true = scipy.linalg.svd(A, compute_uv=False)
    taken = []
    orig = _svd._ritz_in_basis

    def spy(*args):
        out = orig(*args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(_svd, "_ritz_in_basis", spy)
    fast = distsketch.svd(layout(A, lay), K, method=method, n_power_iter=q, seed=5)
    assert taken == [True]
    monkeypatch.setattr(_svd, "_KAPPA_RITZ", 0.0)
    slow = distsketch.svd(layout(A, lay), K, method=method, n_power_iter=q, seed=5)
    assert taken == [True, False]
    assert fast.passes == slow.passes == q + 1
    Uf, Us = np.asarray(fast.U), np.asarray(slow.U)
    eps = np.finfo(float).eps
    for U, Vt in ((Uf, fast.Vt), (Us, slow.Vt)):  # orthonormal to rounding, both ways
        assert np.linalg.norm(U.T @ U - np.eye(K)) <= 100 * eps * K
        assert np.linalg.norm(Vt @ Vt.T - np.eye(K)) <= 100 * eps * K
    # the same rank-K approximation (the same subspace, the same Rayleigh-Ritz) to rounding
    Af, As = (Uf * fast.s) @ fast.Vt, (Us * slow.s) @ slow.Vt
    assert np.linalg.norm(Af - As) <= 1e-10 * s_true[0]
    np.testing.assert_allclose(fast.s, slow.s, rtol=1e-11)
    assert np.all(fast.s <= s_true[:K] * (1 + 1e-12))  # Ritz values never exceed the true ones


def test_block_krylov_blocks_orthogonal_save_the_last_read():
    """i^-1 decay, q = 2: Krylov blocks of a plain power sequence made a basis of condition ~7e6 and a
    last read for B; orthogonalised test blocks keep it at cond(A) on the Krylov space (< 1e4)."""
    rng = np.random.default_rng(1)
    m, n = 4000, 400
    s = 1.0 / np.arange(1, n + 1)
    A = (np.linalg.qr(rng.standard_normal((m, n)))[0] * s) @ np.linalg.qr(rng.standard_normal((n, n)))[0].T
    res = distsketch.svd(A, 20, method="block_krylov", n_power_iter=2, seed=0)
    assert res.passes == 3 and "last read" not in res.reason
    opt = np.sqrt(np.sum(s[20:] ** 2))
    assert np.linalg.norm(A - (res.U * res.s) @ res.Vt) / opt <= 1.01
    np.testing.assert_allclose(res.s[:5], s[:5], rtol=1e-8)


@pytest.mark.parametrize("lay", ["numpy", ("rows", (700, N))], ids=lay_id)
def test_wider_krylov_blocks_buy_accuracy_without_a_read(lay):
    # the reads-against-columns trade in svd's Notes: one Krylov iteration with more oversampling
    # reads A twice, as with the default, and comes closer to the optimum than the default does
    A = make("slow")
    s = np.linalg.svd(A, compute_uv=False)
    opt = np.sqrt(np.sum(s[K:] ** 2))
    errs = {}
    for p in (10, 40):
        res = distsketch.svd(layout(A, lay), K, method="block_krylov", n_power_iter=1, n_oversamples=p, seed=1)
        U, Vt = np.asarray(res.U), np.asarray(res.Vt)
        errs[p] = np.linalg.norm(A - (U * res.s) @ Vt) / opt
        assert res.passes == 2 and res.n_power_iter == 1, (p, res.passes)
        assert abs(res.error_estimate - errs[p] * opt) <= 1e-6 * np.linalg.norm(A)
    assert errs[40] < errs[10] - 2e-3 and errs[40] < 1.01, errs

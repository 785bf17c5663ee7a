"""The passes and their kernels: one read of A per pass (counted independently by a chunk-reading
wrapper), the finiteness check only in the first pass, the kernel contract, and the Dask backend's
determinism, graph names and block cache. Every pass against numpy on every backend and dtype is
the abstract suite of tests/test_backends.py."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest

from distsketch import passes
from distsketch.backends import DaskRowData, NumpyRowData, as_rowdata
from distsketch.operators import make_operator

M, N = 9_000, 10


class CountingArray:
    """Array-like whose every slice read is counted: an independent count of chunk reads."""

    def __init__(self, A):
        self.A, self.shape, self.dtype, self.ndim = A, A.shape, A.dtype, A.ndim
        self.reads = 0
        self._lock = threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            self.reads += 1
        return self.A[key]


@pytest.fixture(scope="module")
def A():
    return np.random.default_rng(3).standard_normal((M, N))


def test_one_read_of_each_chunk_per_pass(A):
    """Count chunk reads with an independent wrapper: each pass reads every chunk exactly once."""
    counted = CountingArray(A)
    Ad = da.from_array(counted, chunks=(1000, N), asarray=False)
    data = DaskRowData(Ad)
    counted.reads = 0
    nblocks = Ad.numblocks[0]
    op = make_operator("srct", 30, M, seed=0)
    rng = np.random.default_rng(1)
    u = data.distribute(rng.standard_normal(M))
    v = rng.standard_normal(N)
    expected = 0
    for step in range(3):
        if step == 0:
            passes.left_sketch(data, op, extra=[u])
        elif step == 1:
            passes.gram(data)
        else:
            passes.lsqr_step(data, v, u, 0.5)
        expected += nblocks
        assert counted.reads == expected, (step, counted.reads, expected)
    assert data.passes == 3


def test_check_only_in_first_pass(A):
    data = NumpyRowData(A)
    passes.col_norms(data)
    assert data.checked
    data.A = A.copy()
    data.A[0, 0] = np.inf  # not re-checked: the check costs nothing after the first pass
    assert np.isinf(passes.col_norms(data)[0])


def test_as_rowdata_dispatch(A, tmp_path):
    import zarr

    assert isinstance(as_rowdata(A), NumpyRowData)
    assert isinstance(as_rowdata(da.from_array(A)), DaskRowData)
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=A.shape, chunks=(2000, N), dtype="f8")
    z[...] = A
    data = as_rowdata(str(tmp_path / "a.zarr"))
    assert isinstance(data, DaskRowData) and data.row_chunks == (2000,) * 4 + (1000,)
    np.testing.assert_allclose(passes.col_norms(data), np.linalg.norm(A, axis=0), rtol=1e-13)


def test_dask_pass_is_deterministic_across_schedulers(A):
    """Fixed-order tree sums: the threaded and synchronous schedulers give bit-identical results."""
    data = DaskRowData(da.from_array(A, chunks=(700, N)))
    with dask.config.set(scheduler="threads"):
        g1 = passes.gram(data)[0]
    with dask.config.set(scheduler="synchronous"):
        g2 = passes.gram(data)[0]
    np.testing.assert_array_equal(g1, g2)


# --- the kernel contract and the alignment assumption of the Dask backend ------------------------
def _at_offset(X, off):
    """A copy of X whose data starts ``off`` bytes past a 64-byte boundary."""
    buf = np.empty(X.nbytes + 128, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64 + off
    out = buf[start:start + X.nbytes].view(X.dtype).reshape(X.shape)
    out[...] = X
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(4096, 12), (3001, 200), (2048, 1000)])
def test_row_kernels_do_not_depend_on_item_aligned_offsets(dtype, shape):
    """The Dask backend uses large item-aligned blocks in place (no 64-byte copy): this holds only
    if the installed BLAS gives bit-identical results at every item-aligned address."""
    rng = np.random.default_rng(1)
    m, n = shape
    A0 = rng.standard_normal(shape).astype(dtype)
    X = rng.standard_normal((n, 7)).astype(dtype)
    u = rng.standard_normal((m, 1)).astype(dtype)
    op = make_operator("gaussian", 16, m, seed=1)
    calls = [
        (passes.K_MATMUL_RMATMUL_FROB, (), (X,)), (passes.K_LSQR_STEP, (u,), (X[:, :1], 0.5)),
        (passes.K_GRAM, (u,), ()), (passes.K_COL_NORMS, (), ()), (passes.K_RMATMUL, (u,), ()),
        (passes.K_LEFT_SKETCH, (u,), ((op,),)), (passes.K_MATMUL, (), (X,)),
    ]
    # the row kernels of qrcp / interpolative / cur: float64 inside (a float32 block is converted to a
    # fresh, aligned float64 array, so only float64 blocks are read in place)
    J, R11 = np.array([2, 0, 5]), np.triu(rng.standard_normal((3, 3))) + 3 * np.eye(3)
    om, th = make_operator("gaussian", 5, n, seed=2), make_operator("gaussian", 4, n, seed=3)
    S, Th = make_operator("sparse_sign", 16, m, seed=4), make_operator("gaussian", 4, m, seed=5)
    calls += [] if dtype != np.float64 else [
        (passes.K_CQRRPT_GRAM, (), (J, np.array([1, 4]), R11, True)), (passes.K_CQRRPT_GRAM2, (), (J, R11, R11)),
        (passes.K_RIGHT_TWO, (), (om, th)), (passes.K_CUR_SKETCH, (), (S, Th, (om,))),
        (passes.K_CUR_SECOND, (), (J, R11, np.array([3, 1]), np.dtype(dtype))),
    ]
    ref = [k(_at_offset(A0, 0), 0, d, *s) for k, d, s in calls]
    for off in range(A0.itemsize, 64, A0.itemsize):
        A = _at_offset(A0, off)
        for (k, d, s), r in zip(calls, ref):
            out = k(A, 0, d, *s)
            for a, b in zip(out[0] + out[1], r[0] + r[1]):
                np.testing.assert_array_equal(a, b, err_msg=f"{k.name} at offset {off}")


def test_kernels_are_declared_objects():
    """Every kernel is a Kernel (function + its non-finite and reduction properties), in passes.py."""
    ks = {name: getattr(passes, name) for name in dir(passes) if name.startswith("K_")}
    assert len(ks) >= 20 and all(isinstance(k, passes.Kernel) for k in ks.values())
    assert all(k.fn.__module__ == "distsketch.passes" for k in ks.values())
    assert passes.K_GRAM.propagates_nonfinite and not passes.K_RMATMUL.propagates_nonfinite
    assert not passes.K_MATMUL.reduces and passes.K_GRAM.reduces
    with pytest.raises(Exception):  # frozen
        passes.K_GRAM.propagates_nonfinite = False


def test_dask_pass_names_are_tokens_of_their_inputs(A):
    data = DaskRowData(da.from_array(A, chunks=(3000, N)))
    X = np.ones((N, 2))
    outs = [data.row_pass_lazy(passes.K_MATMUL, small=(X * c,), dist_out=((2, A.dtype),))[0][0] for c in (1, 1, 2)]
    assert outs[0].name == outs[1].name != outs[2].name
    y0, y2 = dask.compute(outs[0], outs[2])
    np.testing.assert_allclose(y2, 2 * y0, rtol=1e-14)
    np.testing.assert_allclose(y0, A @ X, rtol=1e-13)


_READS = [0]  # chunk reads by GlobalCountingArray (in this process: the test's workers are threads)


class GlobalCountingArray:
    """Picklable counting array (the graph goes to a scheduler): reads are counted in ``_READS``."""

    def __init__(self, A):
        self.A, self.shape, self.dtype, self.ndim = A, A.shape, A.dtype, A.ndim

    def __getitem__(self, key):
        _READS[0] += 1  # one worker thread: no lock needed
        return self.A[key]


@pytest.mark.parametrize("cache, reads_per_pass", [("auto", [1, 0, 0]), (False, [1, 1, 1])])
def test_blocks_kept_in_worker_memory_when_they_fit(A, cache, reads_per_pass, request):
    """With a Client whose workers can hold A, the first pass keeps the blocks: later passes
    read storage no more (counted by an independent wrapper), with the same results.

    Runs in a fresh interpreter: its in-process cluster (needed to count reads in this process)
    hung in full-suite runs after other tests' clusters, and never alone."""
    import os
    import subprocess
    import sys

    if os.environ.get("DISTSKETCH_TEST_CHILD") != "1":
        env = dict(os.environ, DISTSKETCH_TEST_CHILD="1")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
                              cwd=str(request.config.rootpath), env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return
    from distributed import Client, LocalCluster

    Ad = da.from_array(GlobalCountingArray(A), chunks=(1000, N), asarray=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="1GB",
                      dashboard_address=None) as cluster, Client(cluster):
        data = DaskRowData(Ad, cache=cache)
        nblocks = Ad.numblocks[0]
        X = np.random.default_rng(2).standard_normal((N, 3))
        for step, per in enumerate(reads_per_pass):
            _READS[0] = 0
            G = passes.gram(data)[0] if step != 1 else None
            Y = passes.matmul(data, X) if step == 1 else None
            assert _READS[0] == per * nblocks, (step, _READS[0])
            if G is not None:
                np.testing.assert_allclose(G, A.T @ A, rtol=1e-12)
            else:
                np.testing.assert_allclose(Y.compute(), A @ X, rtol=1e-12)

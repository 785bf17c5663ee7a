"""Out of core: sketching a Zarr array more than 4x a LocalCluster worker's memory limit,
with no worker restart, and the result checked against an independent in-process reference."""

import logging

import numpy as np
import pytest
import zarr

import distsketch
from distsketch.operators import make_operator
from distsketch.problems import generate_problem

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

LIMIT = 256 * 2**20  # bytes per worker; a worker's imports take ~100 MiB of it, a task peaks ~20 MiB above that


@pytest.fixture(scope="module")
def big_problem(tmp_path_factory):
    path = tmp_path_factory.mktemp("ooc") / "big.zarr"
    # 2,100,000 x 64 float64 = 1,025 MiB, 4.0x the worker limit; 4 MiB chunks, so a task
    # (block, decode, partial sketch) stays far below what a worker has above its imports
    return generate_problem(path, 2_100_000, 64, cond=1e3, chunks=8192, seed=11, frac_in_range=0.9)


class _Restarts(logging.Handler):
    """Warnings of the nannies (they run in this process): why a worker was restarted, if one was."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        msg = record.getMessage()
        if "Unmanaged memory use is high" not in msg:
            self.messages.append(f"{record.name}: {msg}")


@pytest.fixture(scope="module")
def small_memory_client():
    from distributed import Client, LocalCluster

    restarts = _Restarts()
    logging.getLogger("distributed").addHandler(restarts)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=LIMIT,
                          dashboard_address=None, silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
            client.restarts = restarts.messages
            yield client
    finally:
        logging.getLogger("distributed").removeHandler(restarts)


def reference_products(path, z, b_weights, op):
    """In-process, chunk by chunk: (A z) and S (A z) through the numpy path, never the cluster."""
    A = zarr.open_array(f"{path}/A", mode="r")
    Az = np.concatenate([A[r0:r0 + 100_000] @ z for r0 in range(0, A.shape[0], 100_000)])
    return op.apply(Az)[:, 0]


@pytest.mark.parametrize("kind", ["sparse_sign", "srct"])
def test_sketch_larger_than_worker_memory(big_problem, small_memory_client, kind):
    client = small_memory_client
    m, n = big_problem.shape
    assert m * n * 8 >= 4 * LIMIT
    limits = {w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert limits == {LIMIT}
    before = set(client.scheduler_info(n_workers=-1)["workers"])
    d = 4 * n
    SA, op = distsketch.sketch(f"{big_problem.path}/A", d, kind=kind, seed=5, return_operator=True)
    SA = SA.compute()
    after = set(client.scheduler_info(n_workers=-1)["workers"])
    assert after == before, f"a worker was restarted or lost: {client.restarts}"
    assert op == make_operator(kind, d, m, seed=5)
    # independent check: (S A) z = S (A z) for a random z
    z = np.random.default_rng(0).standard_normal(n)
    ref = reference_products(big_problem.path, z, None, op)
    np.testing.assert_allclose(SA @ z, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    # and S A embeds: its singular values are within a factor 2 of A's (d = 4n)
    s = np.linalg.svd(SA, compute_uv=False)
    assert np.all(s / big_problem.s < 2) and np.all(s / big_problem.s > 0.3)


def test_pass_protocol_out_of_core(big_problem, small_memory_client):
    """The Gram pass through the Dask backend on the same store, same limits, no restart."""
    from distsketch import passes
    from distsketch.backends import as_rowdata

    client = small_memory_client
    before = set(client.scheduler_info(n_workers=-1)["workers"])
    data = as_rowdata(f"{big_problem.path}/A")
    G, ATb = passes.gram(data, extra=[data.distribute(big_problem.dask("b"))])
    assert set(client.scheduler_info(n_workers=-1)["workers"]) == before, client.restarts
    assert data.passes == 1
    # A^T A = V diag(s^2) V^T: its eigenvalues are the stored s^2 (LAPACK eigvalsh as reference)
    ev = np.sort(np.linalg.eigvalsh(G))[::-1]
    np.testing.assert_allclose(ev, big_problem.s**2, rtol=1e-9, atol=1e-12)
    # A^T b = A^T A x for the stored minimum-norm solution x
    np.testing.assert_allclose(ATb[:, 0], G @ big_problem.x, rtol=1e-8, atol=1e-10 * np.abs(ATb).max())

"""Shared fixtures: seeded data, dask chunk layouts, and a LocalCluster for out-of-core tests."""

from __future__ import annotations

import numpy as np
import pytest

KINDS = ["gaussian", "sparse_sign", "srct", "uniform"]


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)


def orthonormal(m: int, n: int, seed: int = 0) -> np.ndarray:
    """Random m x n matrix with orthonormal columns (LAPACK QR of a Gaussian)."""
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((m, n)))[0]


@pytest.fixture(scope="module")
def local_cluster_client():
    """A 2-worker LocalCluster shared by the tests of one module that need real worker processes.

    Module scope: the client becomes the default one while it lives, so a session-wide cluster
    made every later module run through it (and count reads in the workers' copies of their arrays)."""
    import logging

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR, memory_limit="1GB") as cluster, Client(cluster) as client:
        yield client

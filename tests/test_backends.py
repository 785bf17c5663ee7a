"""The backend contract (distsketch.backends.RowData), as one abstract suite run on every backend.

:class:`ProtocolTests` holds the tests; each subclass says how a backend holds ``A`` (numpy row
blocks, a Dask array with uneven row and split column chunks, MPI on ``COMM_SELF`` with small
blocks) and in which dtype (float64, float32): the zarr ``StoreTests`` pattern. References are
numpy/LAPACK products of the same values in float64, with dtype-aware tolerances.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from distsketch import passes
from distsketch.backends import DaskRowData, NumpyRowData
from distsketch.backends._protocol import block_checksum
from distsketch.errors import NonFiniteError, ParameterError, ShapeError
from distsketch.operators import make_operator

M, N = 9_000, 10


class ProtocolTests:
    """What every backend promises to the algorithms (see the table in backends/_protocol.py)."""

    dtype = np.float64
    family = np.ndarray  # what RowData.output returns
    can_transpose = True

    def make(self, A):
        raise NotImplementedError

    @pytest.fixture
    def A(self):
        return np.random.default_rng(3).standard_normal((M, N)).astype(self.dtype)

    def tol(self, x):
        rel = 1e-12 if self.dtype == np.float64 else 3e-4
        return rel * max(1.0, float(np.abs(x).max()))

    def test_each_pass_matches_numpy(self, A):
        data = self.make(A)
        A64 = A.astype(np.float64)  # the same values: an exact reference
        rng = np.random.default_rng(0)
        b, u = rng.standard_normal(M), rng.standard_normal(M)
        X, v = rng.standard_normal((N, 3)), rng.standard_normal(N)
        op = make_operator("sparse_sign", 40, M, seed=1)
        Omega = make_operator("gaussian", 6, N, seed=2)
        SA, Sb = passes.left_sketch(data, op, extra=[data.distribute(b)])
        S = op.toarray()
        np.testing.assert_allclose(SA, S @ A64, atol=self.tol(S @ A64))
        np.testing.assert_allclose(Sb[:, 0], S @ b, atol=self.tol(S @ b))
        Y = passes.matmul(data, X)
        np.testing.assert_allclose(data.gather(Y), A64 @ X, atol=self.tol(A64 @ X))
        np.testing.assert_allclose(passes.rmatmul(data, Y), A64.T @ (A64 @ X), atol=self.tol(A64.T @ A64 @ X))
        _, Z = passes.matmul_rmatmul(data, X)
        np.testing.assert_allclose(Z, A64.T @ A64 @ X, atol=self.tol(Z))
        w, ATw, ww = passes.lsqr_step(data, v, data.distribute(u), 0.7)
        ref_w = A64 @ v - 0.7 * u
        np.testing.assert_allclose(data.gather(w)[:, 0], ref_w, atol=self.tol(ref_w))
        np.testing.assert_allclose(ATw[:, 0], A64.T @ ref_w, atol=self.tol(A64.T @ ref_w))
        assert abs(ww - ref_w @ ref_w) <= self.tol(1.0) * (ref_w @ ref_w)
        G, ATb = passes.gram(data, extra=[data.distribute(b)])
        np.testing.assert_allclose(G, A64.T @ A64, atol=self.tol(G))
        np.testing.assert_allclose(ATb[:, 0], A64.T @ b, atol=self.tol(ATb))
        np.testing.assert_allclose(passes.col_norms(data), np.linalg.norm(A64, axis=0), rtol=self.tol(1.0))
        R = passes.right_sketch(data, Omega)
        np.testing.assert_allclose(data.gather(R), A64 @ Omega.toarray().T, atol=self.tol(A64))
        assert data.passes == 8

    def test_rank_revealing_passes_match_numpy(self, A):
        """The passes of qrcp / interpolative / cur (float64 whatever the data's dtype) against dense
        numpy products of the same values."""
        import scipy.linalg

        data = self.make(A)
        A64 = A.astype(np.float64)
        rng = np.random.default_rng(5)
        J, T = np.array([3, 0, 7]), np.array([1, 2, 4, 5, 6, 8, 9])
        R11 = np.triu(rng.standard_normal((3, 3))) + 4 * np.eye(3)
        Bref = scipy.linalg.solve_triangular(R11, A64[:, J].T, trans="T").T  # A[:, J] R11^{-1}
        tol = lambda x: 1e-12 * max(1.0, float(np.abs(x).max()))  # noqa: E731  (float64 inside)
        B, G, C = passes.cqrrpt_gram(data, J, T, R11)
        np.testing.assert_allclose(data.gather(B), Bref, atol=tol(Bref))
        np.testing.assert_allclose(G, Bref.T @ Bref, atol=tol(G))
        np.testing.assert_allclose(C, Bref.T @ A64[:, T], atol=tol(C))
        B0, G0, C0 = passes.cqrrpt_gram(data, J, np.arange(N), R11, keep=False)
        assert B0 is None and np.allclose(G0, G, rtol=0, atol=tol(G))
        np.testing.assert_allclose(C0, Bref.T @ A64, atol=tol(C0))
        Mx = rng.standard_normal((3, 3))
        np.testing.assert_allclose(passes.cqrrpt_gram2(data, J, R11, Mx), (Bref @ Mx).T @ (Bref @ Mx),
                                   atol=tol(G) * 10)
        Rt = np.triu(rng.standard_normal((3, 3))) + 3 * np.eye(3)
        Q = data.gather(passes.dist_trsm(data, B, Rt, dtype=np.float32))
        assert Q.dtype == np.float32
        np.testing.assert_allclose(Q, scipy.linalg.solve_triangular(Rt, Bref.T, trans="T").T, rtol=1e-5, atol=1e-5)
        om, th = make_operator("gaussian", 6, N, seed=2), make_operator("gaussian", 4, N, seed=3)
        Y, Z = passes.right_sketch_pair(data, om, th)
        np.testing.assert_allclose(data.gather(Y), A64 @ om.toarray().T, atol=tol(A64) * 10)
        np.testing.assert_allclose(data.gather(Z), A64 @ th.toarray().T, atol=tol(A64) * 10)
        Y0, _ = passes.right_sketch_pair(data, None, th)
        np.testing.assert_array_equal(data.gather(Y0), A64)
        S, Th = make_operator("sparse_sign", 30, M, seed=4), make_operator("gaussian", 5, M, seed=6)
        Ys, copy, TA, SA = passes.cur_sketch(data, S, Th, (om, None))
        assert copy is None and len(Ys) == 2
        np.testing.assert_allclose(data.gather(Ys[0]), A64 @ om.toarray().T, atol=tol(A64) * 10)
        np.testing.assert_array_equal(data.gather(Ys[1]), A64)
        np.testing.assert_allclose(TA, Th.toarray() @ A64, atol=tol(TA) * 100)
        np.testing.assert_allclose(SA, S.toarray() @ A64, atol=tol(SA) * 100)
        Ys, copy, TA2, SA = passes.cur_sketch(data, None, Th)
        assert Ys == [] and SA is None
        np.testing.assert_array_equal(data.gather(copy), A64)
        np.testing.assert_allclose(TA2, TA, atol=tol(TA))
        rows = np.array([8999, 17, 4096, 4095])
        Cc, G2, BtA, Rr = passes.cur_second(data, J, R11, rows, dtype=self.dtype)
        Cc = data.gather(Cc)
        assert Cc.dtype == self.dtype
        np.testing.assert_array_equal(Cc, A[:, J])
        np.testing.assert_allclose(G2, G, atol=tol(G))
        np.testing.assert_allclose(BtA, Bref.T @ A64, atol=tol(BtA))
        np.testing.assert_array_equal(Rr, A64[rows])
        assert data.passes == 8
        # distributed operands only: nothing read, nothing counted
        Yd = data.gather(Y)
        Qs = np.linalg.qr(rng.standard_normal((6, 2)))[0]
        r = data.gather(passes.dist_row_residuals(data, Y, Qs))[:, 0]
        P = Yd - (Yd @ Qs) @ Qs.T
        np.testing.assert_allclose(r, np.sum(P * P, axis=1), atol=tol(Yd) ** 0.5 * 1e-4)
        Yi, Zi = passes.dist_take(data, rows, Y, Z)
        np.testing.assert_array_equal(Yi, Yd[rows])
        np.testing.assert_array_equal(Zi, data.gather(Z)[rows])
        Qi, Ri = np.linalg.qr(Yi.T)  # Y[rows].T = Qi Ri
        X = passes.dist_row_interp(data, Y, Qi, Ri, dtype=np.float64)
        Xref = Yd @ np.linalg.pinv(Yi)
        np.testing.assert_allclose(data.gather(X), Xref, atol=1e-8 * max(1.0, float(np.abs(Xref).max())))
        e2, z2 = passes.dist_row_resid(data, X, Z, Zi)
        Zd = data.gather(Z)
        E = Zd - data.gather(X) @ Zi
        assert abs(e2 - np.vdot(E, E)) <= 1e-10 * np.vdot(Zd, Zd) and abs(z2 - np.vdot(Zd, Zd)) <= 1e-12 * z2
        assert data.passes == 8

    def test_first_pass_checks_finite_and_names_the_chunk(self, A):
        B = A.copy()
        B[6100, 7] = np.nan
        data = self.make(B)
        with pytest.raises(NonFiniteError, match=r"chunk of rows (\d+):(\d+), columns 0:10 .*row 6100, column 7") as e:
            passes.gram(data)
        r0, r1 = map(int, e.value.args[0].split("chunk of rows ")[1].split(",")[0].split(":"))
        assert r0 <= 6100 < r1 and not data.checked

    def test_fingerprint_is_the_checksum_of_every_byte(self, A):
        """The same value for any backend and blocking: the sum over blocks of block_checksum."""
        data = self.make(A)
        assert data.fingerprint is None
        passes.col_norms(data)
        h = int(block_checksum(A, 0)[0])
        assert data.fingerprint == f"{np.dtype(self.dtype).name}[{M}x{N}]:{h:016x}" and data.checked

    def test_checksum_of_an_operand(self, A):
        """RowData.checksum: block_checksum of the whole vector, whatever the blocks; no read of A; any change seen."""
        data = self.make(A)
        b = np.random.default_rng(4).standard_normal(M).astype(self.dtype)
        h = data.checksum(data.distribute(b))
        assert h == int(block_checksum(b[:, None], 0)[0]) and data.passes == 0
        b2 = b.copy()
        b2[7001] = np.nextafter(b2[7001], np.inf, dtype=self.dtype)  # one bit of one entry
        assert data.checksum(data.distribute(b2)) != h
        assert data.scaled(2.0).checksum(data.distribute(b)) == h  # the operand's bytes, not A's scale

    def test_distribute_checks_rows_and_values(self, A):
        data = self.make(A)
        with pytest.raises(ShapeError, match=r"operand must have m=9000 rows like A; got shape \(10,\)"):
            data.distribute(np.ones(10))
        b = np.ones(M)
        b[4500] = np.inf
        with pytest.raises(NonFiniteError, match="b holds 1 non-finite value.*row 4500"):
            passes.gram(data, extra=[data.distribute(b)])

    def test_output_is_in_the_callers_family_and_dtype(self, A):
        data = self.make(A)
        X = np.random.default_rng(1).standard_normal((N, 2))
        Y = passes.matmul(data, X)
        for dt in (None, np.float32):
            out = data.output(Y, dtype=dt)
            assert isinstance(out, self.family) and out.dtype == (dt or Y.dtype)
            np.testing.assert_allclose(np.asarray(out, dtype=np.float64), A.astype(np.float64) @ X,
                                       atol=self.tol(A) * (1e4 if dt == np.float32 else 1))
        assert data.passes == 1  # output reads nothing

    def test_peek_reads_a_block_without_a_pass(self, A):
        data = self.make(A)
        np.testing.assert_array_equal(data.peek(slice(4090, 4110), slice(3, 9)), A[4090:4110, 3:9])
        assert data.passes == 0 and not data.checked

    def test_restore_state(self, A):
        data = self.make(A)
        data.restore_state(passes=7)
        passes.col_norms(data)
        assert data.passes == 8 and data.checked
        data.restore_state(checked=False)
        assert not data.checked
        with pytest.raises(ParameterError, match=r"passes must be a non-negative integer; got -1"):
            data.restore_state(passes=-1)
        fresh = self.make(A)
        fresh.expect_fingerprint("float64[1x1]:0000000000000000", "checkpoint 'c.npz'")
        with pytest.raises(ParameterError, match=r"checked=True while a checkpoint's fingerprint is expected"):
            fresh.restore_state(checked=True)

    def test_scaled_view_and_max_exponent(self, A):
        data = self.make(A)
        e = data.max_exponent()
        top = float(np.abs(A).max())
        assert 2.0 ** (e - 1) <= top < 2.0 ** e and e == math.frexp(top)[1]
        s = data.scaled(2.0**-3)
        assert s.scale == 2.0**-3 and data.scale == 1.0 and s.shape == data.shape
        np.testing.assert_allclose(passes.col_norms(s), np.linalg.norm(A.astype(np.float64), axis=0) / 8,
                                   rtol=self.tol(1.0))
        assert data.passes == s.passes == 2  # counted on the data
        np.testing.assert_array_equal(s.peek(slice(0, 3), slice(0, 3)), A[:3, :3] / 8)

    def test_transposed(self, A):
        W = np.ascontiguousarray(A[:40].T)  # a wide 10 x 40 matrix
        data = self.make(W) if self.can_transpose else None
        if not self.can_transpose:
            data = self.make(A)
            with pytest.raises(ShapeError, match="cannot hold its transpose"):
                data.transposed()
            return
        t = data.transposed()
        assert t.shape == (40, N)
        np.testing.assert_allclose(passes.col_norms(t), np.linalg.norm(W.astype(np.float64), axis=1),
                                   rtol=self.tol(1.0))


class NumpyBackend(ProtocolTests):
    def make(self, A):
        return NumpyRowData(A, block_rows=4096 if A.shape[0] > 4096 else None)


class DaskBackend(ProtocolTests):
    family = da.Array

    def make(self, A):  # uneven row chunks, split columns (the backend merges them into whole rows)
        return DaskRowData(da.from_array(A, chunks=(min(2999, A.shape[0]), 4)))


class MPIBackend(ProtocolTests):
    can_transpose = False

    def make(self, A):
        MPI = pytest.importorskip("mpi4py.MPI")
        from distsketch.backends.mpi import MPIRowData

        data = MPIRowData(A, 0, A.shape[0], MPI.COMM_SELF)
        data.block_rows = 4096  # several blocks per rank
        return data


class TestNumpyFloat64(NumpyBackend):
    dtype = np.float64


class TestNumpyFloat32(NumpyBackend):
    dtype = np.float32


class TestDaskFloat64(DaskBackend):
    dtype = np.float64


class TestDaskFloat32(DaskBackend):
    dtype = np.float32


class TestMPIFloat64(MPIBackend):
    dtype = np.float64


class TestMPIFloat32(MPIBackend):
    dtype = np.float32


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_tree_sum_adds_groups_of_neighbours_left_to_right(k):
    """The Dask tree sum against a replica of its fixed order, on values whose sum depends on the
    order in floating point (so a different grouping would show), and the fan-in rule."""
    import dask

    from distsketch.backends.dask import fan_in_for, tree_sum

    rng = np.random.default_rng(k)
    vals = [(rng.standard_normal(3) * 10.0 ** rng.integers(-8, 8, 3),) for _ in range(13)]
    level = [v[0] for v in vals]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), k):
            acc = level[i]
            for x in level[i + 1:i + k]:
                acc = acc + x
            nxt.append(acc)
        level = nxt
    (got,) = dask.compute(tree_sum([dask.delayed(v) for v in vals], k), scheduler="sync")[0]
    assert np.array_equal(got, level[0])
    assert abs(got - np.sum([v[0] for v in vals], axis=0)).max() <= 1e-6 * 1e8
    # groups of 8 up to n = 1024 (parts of at most 4 n^2 floats, 256 MiB a group), 2 from n ~ 2048;
    # a sketch of d > 4n rows counts d n
    assert [fan_in_for(n) for n in (1, 256, 1024, 1448, 2048, 10_000)] == [8, 8, 8, 4, 2, 2]
    assert [fan_in_for(1024, d) for d in (0, 4096, 8192, 16384, 10**6)] == [8, 8, 4, 2, 2]
    from distsketch.backends.dask import _sketch_rows
    from distsketch.operators import make_operator

    ops = (make_operator("sparse_sign", 300, 1000, seed=0), make_operator("gaussian", 700, 1000, seed=0))
    assert _sketch_rows((ops, np.dtype("float64"))) == 700 and _sketch_rows((np.ones(3), 5)) == 0


def test_a_large_small_operand_is_embedded_without_the_large_graph_warning(local_cluster_client):
    """An n x n operand over distributed's 10 MiB large-graph threshold (n = 1,300: 12.9 MiB) goes
    into the pass's graph without "Sending large graph": the threshold is raised by exactly the
    operands' bytes, for that pass only, and the product is still right (LAPACK reference)."""
    import warnings

    import dask

    from distsketch.backends.dask import _GRAPH_WARNING

    rng = np.random.default_rng(3)
    n = 1_300
    A = rng.standard_normal((400, n))
    X = rng.standard_normal((n, n))
    before = dask.config.get(_GRAPH_WARNING)
    data = DaskRowData(da.from_array(A, chunks=(100, n)))
    with local_cluster_client.as_current(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Y, Z = passes.matmul_rmatmul(data, X)
        Y = data.gather(Y)
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]
    assert dask.config.get(_GRAPH_WARNING) == before
    np.testing.assert_allclose(Y, A @ X, rtol=1e-12, atol=1e-12 * np.abs(A @ X).max())
    np.testing.assert_allclose(Z, A.T @ (A @ X), rtol=1e-11, atol=1e-11 * np.abs(A.T @ A @ X).max())

"""The public entry point: chunk invariance across numpy and dask layouts, several operands,
side='right', lazy in / lazy out, dtype rules, and every bad-input error."""

import os

import dask.array as da
import numpy as np
import pytest
import zarr

import distsketch
from distsketch.errors import (ArrayNotFoundError, InputTypeError, NonFiniteError, ParameterError,
                               ShapeError)

from .conftest import KINDS

M, N, D = 10_000, 12, 48
# chunk layouts: panel-aligned rows, rows not aligned with the 4096 panels, 2-D chunks,
# irregular row chunks
LAYOUTS = [(4096, N), (3001, N), (2500, 5), ((1, 4095, 4097, 1807), (7, 5))]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((M, N)), rng.standard_normal(M)


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("kind", KINDS)
def test_chunk_invariance_left(kind, data):
    A, _ = data
    ref, op = distsketch.sketch(A, D, kind=kind, seed=5, return_operator=True)
    assert isinstance(ref, np.ndarray) and ref.shape == (D, N)
    # the numpy result is S @ A for the dense operator (independent reference: one GEMM)
    np.testing.assert_allclose(ref, op.toarray() @ A, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    for chunks in LAYOUTS:
        lazy, op2 = distsketch.sketch(da.from_array(A, chunks=chunks), D, kind=kind, seed=5, return_operator=True)
        assert isinstance(lazy, da.Array)
        assert op2 == op  # identical operator (same parameters, same entries)
        assert rel(lazy.compute(), ref) <= 1e-13, chunks


@pytest.mark.parametrize("kind", KINDS)
def test_chunk_invariance_right(kind, data):
    A, _ = data
    d = 8
    ref, op = distsketch.sketch(A, d, kind=kind, side="right", seed=9, return_operator=True)
    np.testing.assert_allclose(ref, A @ op.toarray().T, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    for chunks in LAYOUTS:
        lazy = distsketch.sketch(da.from_array(A, chunks=chunks), d, kind=kind, side="right", seed=9)
        assert lazy.shape == (M, d)
        assert rel(lazy.compute(), ref) <= 1e-13, chunks


def test_several_operands_share_the_operator(data):
    A, b = data
    SA, Sb = distsketch.sketch([A, b], D, seed=3)
    assert Sb.shape == (D,)
    np.testing.assert_allclose(SA, distsketch.sketch(A, D, seed=3), rtol=1e-14)
    np.testing.assert_allclose(np.column_stack([SA, Sb]), distsketch.sketch(np.column_stack([A, b]), D, seed=3),
                               rtol=1e-13, atol=1e-13)
    SAd, Sbd = distsketch.sketch([da.from_array(A, chunks=3001), da.from_array(b, chunks=2000)], D, seed=3)
    assert rel(SAd.compute(), SA) <= 1e-13 and rel(Sbd.compute(), Sb) <= 1e-13


def test_zarr_array_and_path(tmp_path, data):
    A, _ = data
    z = zarr.create_array(str(tmp_path / "A.zarr"), shape=A.shape, chunks=(3000, N), dtype="f8")
    z[...] = A
    ref = distsketch.sketch(A, D, seed=1)
    for src in (z, str(tmp_path / "A.zarr"), tmp_path / "A.zarr"):
        out = distsketch.sketch(src, D, seed=1)
        assert isinstance(out, da.Array)
        assert rel(out.compute(), ref) <= 1e-13


def test_seed_none_is_recorded(data):
    A, _ = data
    out, op = distsketch.sketch(A, D, seed=None, return_operator=True)
    again = distsketch.sketch(A, D, seed=op.seed)
    np.testing.assert_array_equal(out, again)


def test_generator_seed_not_mutated(data):
    A, _ = data
    g = np.random.default_rng(0)
    state = g.bit_generator.state
    distsketch.sketch(A, D, seed=g)
    assert g.bit_generator.state == state


@pytest.mark.parametrize("dtype, expect", [(np.int64, np.float64), (np.int32, np.float64), (np.float32, np.float32),
                                           (np.float64, np.float64), (bool, np.float64)])
def test_dtypes(dtype, expect, data):
    A = (data[0] * 10).astype(dtype)
    out = distsketch.sketch(A, D, seed=2)
    assert out.dtype == expect
    lazy = distsketch.sketch(da.from_array(A, chunks=3001), D, seed=2)
    assert lazy.dtype == expect and lazy.compute().dtype == expect
    ref = distsketch.sketch(A.astype(np.float64), D, seed=2)
    tol = 1e-5 if expect == np.float32 else 1e-13
    assert rel(out.astype(np.float64), ref) <= tol


# --- bad input: each raised before any data is read --------------------------------------------
@pytest.mark.parametrize(
    "make, kw, exc, match",
    [
        # non-2-D data
        (lambda A, b: b, {}, ShapeError, r"A must be 2-D; got an array with shape \(10000,\)"),
        (lambda A, b: A[None], {}, ShapeError, r"A must be 2-D; got an array with shape \(1, 10000, 12\)"),
        (lambda A, b: da.from_array(b), {}, ShapeError, "A must be 2-D"),
        # sketch size
        (lambda A, b: A, {"d": 0}, ParameterError, "d must be a positive integer; got d=0"),
        (lambda A, b: A, {"d": 20_000, "kind": "srct"}, ParameterError, "d must be <= m; got d=20000, m=10000"),
        (lambda A, b: A, {"d": 20_000, "kind": "uniform"}, ParameterError, "d must be <= m"),
        (lambda A, b: A, {"d": 4, "nnz": 8}, ParameterError, "nnz=8 nonzeros per column do not fit in d=4"),
        (lambda A, b: A, {"kind": "fjlt"}, ParameterError, "unknown sketch kind 'fjlt'"),
        (lambda A, b: A, {"side": "top"}, ParameterError, "side must be 'left' or 'right'; got 'top'"),
        # operands with mismatched rows
        (lambda A, b: [A, b[:-1]], {}, ShapeError, r"A has 10000 rows but operand 1 has shape \(9999,\)"),
        (lambda A, b: [da.from_array(A), da.from_array(b[:5])], {}, ShapeError, "operand 1 has shape"),
        (lambda A, b: [A, b], {"side": "right"}, ParameterError, "only for side='left'"),
        # types
        (lambda A, b: A.astype(complex), {}, InputTypeError, "has dtype complex128"),
        (lambda A, b: {"a": 1}, {}, InputTypeError, "got dict"),
    ],
)
def test_bad_input(make, kw, exc, match, data):
    A, b = data
    kw = {"d": D, **kw}
    with pytest.raises(exc, match=match):
        distsketch.sketch(make(A, b), **kw)


def test_path_without_zarr_array(tmp_path):
    with pytest.raises(ArrayNotFoundError, match="no Zarr array at"):
        distsketch.sketch(str(tmp_path / "missing.zarr"), 10)
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(ArrayNotFoundError, match="no Zarr array at"):
        distsketch.sketch(str(tmp_path / "group.zarr"), 10)
    with pytest.raises(FileNotFoundError):  # also a builtin FileNotFoundError
        distsketch.sketch(os.fspath(tmp_path / "nothing"), 10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_found_and_chunk_named(bad, data):
    A = data[0].copy()
    A[5123, 3] = bad
    with pytest.raises(NonFiniteError, match=r"rows 0:10000, columns 0:12 \(first: .* at row 5123, column 3\)"):
        distsketch.sketch(A, D, seed=0)
    # a pass reads whole rows: column chunks are merged, the row chunk is named
    with pytest.raises(NonFiniteError, match=r"rows 3001:6002, columns 0:12 .*row 5123, column 3"):
        distsketch.sketch(da.from_array(A, chunks=(3001, 5)), D, seed=0).compute()
    # a uniform sketch that never samples row 5123 still finds it
    with pytest.raises(NonFiniteError, match="row 5123"):
        distsketch.sketch(A, 10, kind="uniform", seed=0)
    b = data[1].copy()
    b[77] = bad
    with pytest.raises(NonFiniteError, match="b holds 1 non-finite value.*row 77"):
        distsketch.sketch([data[0], b], D, seed=0)


# --- lazy sketches go through the pass protocol, with graph names from their inputs -------------
def test_two_lazy_sketches_computed_together_are_distinct(data):
    """Regression: a fixed graph name made both results the same array (a silent wrong answer)."""
    import dask

    A, _ = data
    A2 = A[::-1].copy()
    for kw in ({}, {"kind": "gaussian"}, {"side": "right", "d": 8}):
        kw = {"d": D, **kw}
        l1 = distsketch.sketch(da.from_array(A, chunks=3001), seed=1, **kw)
        l2 = distsketch.sketch(da.from_array(A2, chunks=3001), seed=2, **kw)
        l3 = distsketch.sketch(da.from_array(A, chunks=3001), seed=2, **kw)
        assert len({l1.name, l2.name, l3.name}) == 3
        r1, r2, r3 = dask.compute(l1, l2, l3)
        np.testing.assert_allclose(r1, distsketch.sketch(A, seed=1, **kw), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(r2, distsketch.sketch(A2, seed=2, **kw), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(r3, distsketch.sketch(A, seed=2, **kw), rtol=1e-13, atol=1e-13)


def test_lazy_sketch_names_are_deterministic(data):
    A, _ = data
    a = distsketch.sketch(da.from_array(A, chunks=3001), D, seed=4)
    b = distsketch.sketch(da.from_array(A, chunks=3001), D, seed=4)
    assert a.name == b.name  # same inputs, same graph (dask can share the work)
    c = distsketch.sketch(da.from_array(A, chunks=3001), D, seed=4, nnz=4)
    assert c.name != a.name

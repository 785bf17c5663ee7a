"""lstsq's contract with the rest of the library: it asks nothing of the backend, names the sketch as
distsketch.sketch does, gives each method its documented iteration limit, and gives each istop one
meaning across its solvers (checked against the true residual computed here with numpy)."""

import ast
import pathlib
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.linalg

import distsketch
from distsketch.backends import NumpyRowData
from distsketch.errors import GramFactorError, ParameterError, ShapeError
from distsketch.solve import _runners
from distsketch.solve._result import rounding_level


def test_solve_asks_nothing_of_the_backend():
    """solve/ imports neither dask nor a backend module and never inspects its input's type: it holds a
    RowData (distsketch.backends.as_rowdata) and uses the protocol's methods only. The right-hand side
    ``b`` (a vector, not a RowData) is read by the input layer (_inputs.as_matrix: paths, Zarr, dtypes)."""
    root = pathlib.Path(distsketch.__file__).parent / "solve"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 9
    for path in files:
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
                assert name.split(".")[0] != "dask" and ".dask" not in name, (path.name, name)
                rest = name.replace("backends.as_rowdata", "").replace("backends.pow2_scale", "").replace(
                    "backends.RowData", "")
                assert "backends." not in rest, (path.name, name)
                assert not name.endswith("is_lazy"), (path.name, name)
            if isinstance(node, ast.Attribute):  # no backend state written or read behind the protocol
                assert node.attr not in ("_checked", "_fingerprint", "_expected"), (path.name, node.lineno)
                if isinstance(node.ctx, ast.Store):
                    assert node.attr != "passes", f"{path.name}:{node.lineno}: passes written (use restore_state)"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr", "isinstance"):
                call = ast.unparse(node)
                if node.func.id == "getattr" and ast.unparse(node.args[0]) == "self":
                    continue  # an object's own fields (LSQRState's arrays)
                assert node.func.id == "isinstance" and not any(
                    w in call for w in ("RowData", "Array", "ndarray", "da.")), f"{path.name}:{node.lineno}: {call}"


def _problem(m=3000, n=20, seed=0, cond=1e4):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) * np.geomspace(1, 1 / cond, n)
    return A, rng.standard_normal(m)


def test_kind_and_d_name_the_sketch_as_sketch_does():
    """kind/d (distsketch.sketch's names) and the deprecated sketch_kind/sketch_size give the same x."""
    A, b = _problem()
    new = distsketch.lstsq(A, b, method="sketch_precondition", kind="gaussian", d=70, seed=1)
    with pytest.warns(DeprecationWarning, match=r"sketch_kind=.*deprecated: pass kind="):
        with pytest.warns(DeprecationWarning, match=r"sketch_size=.*deprecated: pass d="):
            old = distsketch.lstsq(A, b, method="sketch_precondition", sketch_kind="gaussian", sketch_size=70, seed=1)
    np.testing.assert_array_equal(new.x, old.x)
    assert new.iterations == old.iterations
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.linalg.norm(new.x - ref) <= 1e-8 * np.linalg.norm(ref)


@pytest.mark.parametrize("kw, match", [
    ({"kind": "gaussian", "sketch_kind": "srct"}, r"kind='gaussian' and sketch_kind='srct' disagree; pass kind only"),
    ({"d": 60, "sketch_size": 80}, r"d=60 and sketch_size=80 disagree; pass d only"),
    ({"d": 10}, r"d=10 is smaller than n=20.*use d >= 20"),
    ({"d": 40.5}, r"d must be an integer; got 40.5"),
])
def test_sketch_keyword_errors(kw, match):
    A, b = _problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ParameterError, match=match):
            distsketch.lstsq(A, b, **kw)


@pytest.fixture
def spy(monkeypatch):
    """Record the maxiter each solver receives (and optionally make cholqr's Gram factor fail)."""
    seen = {}

    def wrap(name, fail=False):
        real = getattr(_runners, name)

        def f(*args, **kw):
            seen.setdefault(name, []).append(kw["maxiter"])
            if fail:
                raise GramFactorError("forced by the test")
            return real(*args, **kw)

        monkeypatch.setattr(_runners, name, f)

    return seen, wrap


@pytest.mark.filterwarnings("ignore::distsketch.errors.ConvergenceWarning")  # maxiter=7 is reached on purpose
@pytest.mark.parametrize("method, maxiter, fail_gram, want", [
    ("auto", None, False, {"cholqr_solve": [20]}),  # auto resolving to cholqr: the documented 20
    ("cholqr", None, False, {"cholqr_solve": [20]}),
    ("normal_cholqr", None, False, {"cholqr_solve": [20]}),
    ("sketch_precondition", None, False, {"lsqr_precond": [200]}),
    ("cholqr", None, True, {"cholqr_solve": [20], "lsqr_precond": [200]}),  # handed over to LSQR: LSQR's 200
    ("cholqr", 7, True, {"cholqr_solve": [7], "lsqr_precond": [7]}),  # a given maxiter is kept
    ("auto-wide", None, False, {"cholqr_minnorm": [20]}),
])
def test_default_maxiter_is_the_running_methods(spy, method, maxiter, fail_gram, want):
    seen, wrap = spy
    wrap("cholqr_solve", fail=fail_gram)
    wrap("lsqr_precond")
    wrap("cholqr_minnorm")
    A, b = _problem(cond=10)
    if method == "auto-wide":
        A, b, method = A[:15].copy(), b[:15].copy(), "auto"
    res = distsketch.lstsq(A, b, method=method, maxiter=maxiter, seed=0)
    assert seen == want
    if method == "auto" and A.shape[0] > A.shape[1]:
        assert res.method == "normal_cholqr", res.reason  # (what the cost model picks for this small problem)


@pytest.mark.parametrize("method", ["sketch_precondition", "cholqr", "normal_cholqr"])
@pytest.mark.parametrize("cond", [1e2, 1e6])
def test_istop_5_means_the_rounding_level_for_every_solver(method, cond):
    """With atol = btol = 0 no tolerance test can hold: every solver stops when the refinement stops
    improving and reports 5 only if the true ||A.T r|| (numpy, here) is within the documented rho."""
    A, b = _problem(cond=cond, seed=2)
    res = distsketch.lstsq(A, b, method=method, atol=0.0, btol=0.0, seed=3)
    r = b - A @ res.x
    normar = np.linalg.norm(A.T @ r)
    rho = rounding_level(res.anorm, np.linalg.norm(r), np.linalg.norm(res.x), A.shape[1])
    assert res.istop == 5 and res.converged, (res.method, res.istop, res.reason)
    assert normar <= rho, (normar, rho)
    assert res.normar == pytest.approx(normar, rel=1e-6, abs=rho)
    xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert np.linalg.norm(res.x - xg) <= 100 * cond * np.finfo(float).eps * np.linalg.norm(xg)


def test_minimum_norm_problem_at_tolerance_0_ends_at_the_rounding_level():
    """The minimum-norm problem's tests use ||A x - b|| as the refinement accumulates it (documented):
    with atol = btol = 0 it ends with istop 1 (the accumulated residual is exactly 0) or 4, and the true
    residual, computed here, is within the documented rho."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((30, 400)) * np.geomspace(1, 1e-4, 30)[:, None]
    b = rng.standard_normal(30)
    res = distsketch.lstsq(A, b, atol=0.0, btol=0.0, seed=1)
    assert res.istop in (1, 4) and res.converged and res.method == "cholqr"
    resid = np.linalg.norm(A @ res.x - b)
    rho = rounding_level(0.0, 0.0, 0.0, 30, res.anorm * np.linalg.norm(res.x) + np.linalg.norm(b))
    assert resid <= rho and res.normr <= rho
    xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert np.linalg.norm(res.x - xg) <= 1e-9 * np.linalg.norm(xg)


def test_wide_rowdata_is_solved_on_its_transpose():
    """A wide matrix given as a RowData: lstsq holds its transpose (RowData.transposed), as for an array."""
    rng = np.random.default_rng(6)
    A, b = rng.standard_normal((25, 300)), rng.standard_normal(25)
    res = distsketch.lstsq(NumpyRowData(A), b, seed=2)
    ref = distsketch.lstsq(A, b, seed=2)
    np.testing.assert_array_equal(res.x, ref.x)
    xg = scipy.linalg.lstsq(A, b, lapack_driver="gelsd")[0]
    assert np.linalg.norm(res.x - xg) <= 1e-10 * np.linalg.norm(xg)
    lazy = distsketch.lstsq(da.from_array(A, chunks=(25, 70)), b, seed=2)
    assert isinstance(lazy.x, da.Array)  # the long solution stays in the caller's family
    np.testing.assert_allclose(lazy.x.compute(), xg, rtol=0, atol=1e-10 * np.linalg.norm(xg))


def test_wide_mpi_rowdata_is_refused():
    MPI = pytest.importorskip("mpi4py.MPI")
    from distsketch.backends.mpi import MPIRowData

    A = np.random.default_rng(7).standard_normal((25, 300))
    with pytest.raises(ShapeError, match=r"MPIRowData holds row blocks of a 25 x 300 matrix and cannot hold its "
                                         r"transpose; store the matrix transposed"):
        distsketch.lstsq(MPIRowData(A, 0, 25, MPI.COMM_SELF), np.ones(25))

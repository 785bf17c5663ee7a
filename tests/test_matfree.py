"""distsketch.matfree: operators seen through products; trace, eigsh and density against dense
references (LAPACK through numpy/scipy) and closed forms, over numpy, Dask and MPI Gram operators."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from distsketch import matfree as mf
from distsketch.errors import InputTypeError, NonFiniteError, ParameterError, ShapeError
from distsketch.matfree._probes import DENSITY, probe_block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the operator market: symmetric matrices with known spectra -------------------------------
def _rotate(lam, seed):
    n = len(lam)
    Q = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


def diagonal(n=150):
    # distinct entries of both signs, in a shuffled order
    lam = np.linspace(-3.0, 7.0, n) + 0.01 * np.sin(np.arange(n))
    return np.diag(np.random.default_rng(1).permutation(lam))


def wishart(n=120, m=300):
    X = np.random.default_rng(2).standard_normal((m, n))
    return X.T @ X / m


def lowrank_noise(n=150, r=8):
    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.standard_normal((n, r)))[0]
    G = rng.standard_normal((n, n))
    return (U * np.linspace(10.0, 5.0, r)) @ U.T + 0.1 * (G + G.T) / np.sqrt(8 * n)


def decaying(n=200, p=2.0):
    return _rotate(1.0 / np.arange(1, n + 1) ** p, 4)


MARKET = {"diagonal": diagonal, "wishart": wishart, "lowrank_noise": lowrank_noise}


# -- operators ----------------------------------------------------------------------------
class _Custom:
    def __init__(self, A):
        self.A, self.shape, self.dtype = A, A.shape, A.dtype

    def matmat(self, X):
        return self.A @ X


@pytest.mark.parametrize("wrap", ["dense", "list", "sparse", "linop", "custom"])
def test_aslinearoperator_products(wrap):
    A = wishart(40, 80)
    A0 = A.copy()
    op = {"dense": lambda: A, "list": lambda: A.tolist(), "sparse": lambda: scipy.sparse.csr_matrix(A),
          "linop": lambda: scipy.sparse.linalg.aslinearoperator(A), "custom": lambda: _Custom(A)}[wrap]()
    L = mf.aslinearoperator(op)
    X = np.random.default_rng(0).standard_normal((40, 3))
    np.testing.assert_allclose(L.matmat(X), A @ X, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(L.matvec(X[:, 0]), A @ X[:, 0], rtol=1e-13, atol=1e-13)
    assert L.shape == (40, 40) and L.matvecs == 4 and L.calls == 2
    assert mf.aslinearoperator(L) is L
    np.testing.assert_array_equal(A, A0)  # the caller's matrix is untouched


def test_operator_float32_stays_float32():
    A = wishart(30, 60).astype(np.float32)
    L = mf.aslinearoperator(A)
    assert L.dtype == np.float32 and L.matmat(np.ones((30, 2))).dtype == np.float32
    assert mf.aslinearoperator(np.eye(4, dtype=np.int64)).dtype == np.float64


@pytest.mark.parametrize("op, exc, match", [
    (np.ones((3, 4)), ShapeError, r"must be square .* got shape \(3, 4\).*gram_operator"),
    (np.ones(5), ShapeError, r"2-D square array; got shape \(5,\)"),
    (np.eye(3) * 1j, InputTypeError, "real symmetric operator; got dtype complex128"),
    (np.array([["a"]]), InputTypeError, "real numeric type; got <U1"),
    ("matrix", InputTypeError, "got an object of type str"),
    (object(), InputTypeError, "shape, dtype and matmat"),
])
def test_aslinearoperator_bad_input(op, exc, match):
    with pytest.raises(exc, match=match):
        mf.aslinearoperator(op)


def test_operator_bad_products():
    L = mf.aslinearoperator(np.eye(4))
    with pytest.raises(ShapeError, match=r"array of 4 rows \(n x k\); got shape \(3, 2\)"):
        L.matmat(np.ones((3, 2)))

    class Wrong(_Custom):
        def matmat(self, X):
            return X[:-1]

    with pytest.raises(ShapeError, match=r"product has shape \(3, 2\).*must give n x k"):
        mf.aslinearoperator(Wrong(np.eye(4))).matmat(np.ones((4, 2)))


def test_gram_operator_numpy_one_read_per_block():
    A = np.random.default_rng(5).standard_normal((3000, 25))
    G = mf.gram_operator(A)
    X = np.random.default_rng(6).standard_normal((25, 4))
    np.testing.assert_allclose(G.matmat(X), A.T @ (A @ X), rtol=1e-12, atol=1e-10)
    assert G.shape == (25, 25) and G.reads == 1 and G.matvecs == 4
    G.matmat(X[:, 0])
    assert G.reads == 2
    A32 = A.astype(np.float32)
    assert mf.gram_operator(A32).matmat(X).dtype == np.float32  # float32 data, float32 products


def test_gram_operator_dask_zarr_on_workers(tmp_path, local_cluster_client):
    """A Zarr matrix read chunk by chunk on 2 worker processes: the same products and eigenvalues as numpy."""
    from distsketch.problems import generate_problem

    p = generate_problem(tmp_path / "g.zarr", 6000, 40, cond=100, chunks=700, seed=3)
    A = p.numpy("A")
    G = mf.gram_operator(f"{p.path}/A")
    X = np.random.default_rng(0).standard_normal((40, 3))
    np.testing.assert_allclose(G.matmat(X), A.T @ (A @ X), rtol=1e-11, atol=1e-9)
    r = mf.eigsh(G, 3, seed=0, block_size=3)
    assert r.converged
    np.testing.assert_allclose(r.eigenvalues, p.s[:3] ** 2, rtol=1e-8)
    assert G.reads == 1 + r.iterations + 1  # one read per block product (and the residual check)


def test_gram_operator_mpi():
    """2 MPI ranks holding row ranges: the same eigenvalues and trace estimate as the numpy path."""
    pytest.importorskip("mpi4py")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.skip("no mpiexec next to the interpreter")
    code = (
        "import json, numpy as np\n"
        "from mpi4py import MPI\n"
        "from distsketch.backends.mpi import MPIRowData, row_range\n"
        "from distsketch import matfree as mf\n"
        "c = MPI.COMM_WORLD\n"
        "A = np.random.default_rng(7).standard_normal((5000, 30)) * np.linspace(1, 3, 30)\n"
        "r0, r1 = row_range(5000, c.size, c.rank)\n"
        "G = mf.gram_operator(MPIRowData(np.ascontiguousarray(A[r0:r1]), r0, 5000, c))\n"
        "e = mf.eigsh(G, 3, seed=0)\n"
        "t = mf.trace(G, method='xtrace', matvecs=12, seed=1)\n"
        "if c.rank == 0:\n"
        "    print(json.dumps({'ev': e.eigenvalues.tolist(), 'conv': e.converged, 'tr': t.estimate,\n"
        "                      'reads': G.reads, 'it': e.iterations, 'ranks': c.size}))\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    p = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=180, env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    A = np.random.default_rng(7).standard_normal((5000, 30)) * np.linspace(1, 3, 30)
    ref = mf.eigsh(mf.gram_operator(A), 3, seed=0)
    assert out["ranks"] == 2 and out["conv"]
    np.testing.assert_allclose(out["ev"], np.linalg.svd(A, compute_uv=False)[:3] ** 2, rtol=1e-9)
    np.testing.assert_allclose(out["ev"], ref.eigenvalues, rtol=1e-12)
    assert out["tr"] == pytest.approx(mf.trace(A.T @ A, method="xtrace", matvecs=12, seed=1).estimate, rel=1e-10)
    assert out["reads"] == out["it"] + 1 + 2  # eigsh's blocks and its check, then XTrace's two blocks


# -- trace ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", mf.TRACE_METHODS)
@pytest.mark.parametrize("name", ["decaying", "lowrank_noise", "wishart"])
def test_trace_stderr_covers(method, name):
    """|estimate - tr(A)| <= 2 stderr in at least 90 of 100 seeded trials (LAPACK-free: tr is exact)."""
    A = {"decaying": decaying, "lowrank_noise": lowrank_noise, "wishart": wishart}[name]()
    t = np.trace(A)
    hits = 0
    for seed in range(100):
        r = mf.trace(A, method=method, matvecs=60, seed=seed)
        assert r.matvecs == 60 and r.method == method and r.seed == seed
        hits += abs(r.estimate - t) <= 2 * r.stderr
    assert hits >= 90, f"{method} on {name}: covered in {hits}/100 trials"


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_trace_hutchpp_xtrace_beat_hutchinson(probe):
    """On a decaying spectrum at equal products the variance-reduced estimators win by > 10x in RMS error."""
    A = decaying(200, 2.0)
    t = np.trace(A)
    rms = {}
    for method in mf.TRACE_METHODS:
        e = [mf.trace(A, method=method, matvecs=48, probe=probe, seed=s).estimate - t for s in range(40)]
        rms[method] = float(np.sqrt(np.mean(np.square(e))))
    assert rms["hutch++"] * 10 < rms["hutchinson"] and rms["xtrace"] * 10 < rms["hutchinson"], rms


def test_trace_exact_on_low_rank():
    """Rank 5 < m/3: Hutch++ and XTrace capture A exactly (to rounding)."""
    rng = np.random.default_rng(8)
    B = rng.standard_normal((100, 5))
    A = B @ B.T
    for method in ("hutch++", "xtrace"):
        r = mf.trace(A, method=method, matvecs=30, seed=1)
        assert r.estimate == pytest.approx(np.trace(A), rel=1e-10)


def _xtrace_reference(A, Om):
    """XTrace from its definition, in n-space: t_i and the jackknife over leave-two-out estimates."""
    s = Om.shape[1]
    Y = A @ Om

    def est(cols):
        out = []
        for j in cols:
            Qj = np.linalg.qr(Y[:, [c for c in cols if c != j]])[0]
            P = np.eye(len(A)) - Qj @ Qj.T
            out.append(np.trace(Qj.T @ A @ Qj) + Om[:, j] @ P @ A @ P @ Om[:, j])
        return np.array(out)

    ti = est(list(range(s)))
    rep = np.array([est([c for c in range(s) if c != i]).mean() for i in range(s)])
    return ti, float(np.sqrt((s - 1) / s * np.sum((rep - rep.mean()) ** 2)))


def test_xtrace_matches_definition():
    A = decaying(60, 1.0)
    r = mf.trace(A, method="xtrace", matvecs=14, seed=3)
    Om = probe_block(3, 0, 60, 7, "rademacher", np.float64)  # the sketch probes (TRACE_SKETCH)
    ti, se = _xtrace_reference(A, Om)
    np.testing.assert_allclose(r.samples, ti, rtol=1e-10)
    assert r.estimate == pytest.approx(ti.mean(), rel=1e-12)
    assert r.stderr == pytest.approx(se, rel=1e-8)


def test_trace_hutchinson_definition_and_seed():
    A = wishart(50, 100)
    r = mf.trace(A, method="hutchinson", matvecs=20, probe="gaussian", seed=11)
    Z = probe_block(11, 1, 50, 20, "gaussian", np.float64)  # TRACE_RESIDUAL
    q = np.einsum("ij,ij->j", Z, A @ Z)
    assert r.estimate == pytest.approx(q.mean(), rel=1e-13)
    assert r.stderr == pytest.approx(q.std(ddof=1) / np.sqrt(20), rel=1e-12)
    again = mf.trace(A, method="hutchinson", matvecs=20, probe="gaussian", seed=11)
    assert again.estimate == r.estimate and again.stderr == r.stderr
    assert mf.trace(A, method="hutchinson", matvecs=20, probe="gaussian", seed=12).estimate != r.estimate
    free = mf.trace(A, seed=None)
    assert mf.trace(A, seed=free.seed).estimate == free.estimate  # a drawn seed is recorded and replays


def test_trace_float32():
    A = decaying(80, 1.0).astype(np.float32)
    r = mf.trace(A, method="hutch++", matvecs=30, seed=0)
    assert abs(r.estimate - np.trace(A.astype(np.float64))) <= 4 * r.stderr + 1e-4


@pytest.mark.parametrize("kw, match", [
    ({"method": "hutch"}, r"method must be one of \('hutchinson', 'hutch\+\+', 'xtrace'\); got 'hutch'"),
    ({"probe": "normal"}, r"probe must be one of \('rademacher', 'gaussian'\); got 'normal'"),
    ({"method": "hutchinson", "matvecs": 1}, r"matvecs must be an integer >= 2 for method 'hutchinson'; got 1"),
    ({"method": "hutch++", "matvecs": 3}, r"matvecs must be an integer >= 4 for method 'hutch\+\+'; got 3"),
    ({"method": "xtrace", "matvecs": 5}, r"matvecs must be an integer >= 6 for method 'xtrace'; got 5"),
    ({"matvecs": 10.0}, r"matvecs must be an integer >= 4 .* got 10.0"),
])
def test_trace_bad_input(kw, match):
    with pytest.raises(ParameterError, match=match):
        mf.trace(np.eye(10), **kw)


# -- eigsh ----------------------------------------------------------------------------------
def _reference(A, k, which):
    lam = scipy.linalg.eigh(A, eigvals_only=True)
    order = {"LA": np.argsort(-lam), "SA": np.argsort(lam), "LM": np.argsort(-np.abs(lam))}[which]
    return lam[order[:k]]


@pytest.mark.parametrize("which", mf.WHICH)
@pytest.mark.parametrize("name", list(MARKET))
def test_eigsh_against_lapack(name, which):
    A = MARKET[name]()
    k = 4
    r = mf.eigsh(A, k, which=which, seed=0)
    ref = _reference(A, k, which)
    scale = np.max(np.abs(scipy.linalg.eigh(A, eigvals_only=True)))
    assert r.converged, r.message
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=0, atol=1e-8 * scale)
    # the residuals, recomputed here with the dense matrix, meet the tolerance
    X = r.eigenvectors
    res = np.linalg.norm(A @ X - X * r.eigenvalues, axis=0)
    assert np.all(res <= 1e-8 * scale) and np.allclose(res, r.residuals, atol=1e-12 * scale)
    np.testing.assert_allclose(X.T @ X, np.eye(k), atol=1e-12)
    assert r.matvecs == k * r.iterations + k and r.which == which and r.seed == 0  # default block: k columns


def test_eigsh_repeated_eigenvalue():
    lam = np.r_[5.0, 5.0, 4.0, np.linspace(0, 3, 97)]
    A = _rotate(lam, 9)
    r = mf.eigsh(A, 3, seed=1)
    assert r.converged
    np.testing.assert_allclose(r.eigenvalues, [5.0, 5.0, 4.0], atol=1e-8 * 5)


@pytest.mark.parametrize("A, k, ref", [
    (np.eye(50), 3, [1.0, 1.0, 1.0]),  # invariant after one block: it stopped with 2 pairs, converged
    (np.diag([5.0, 5, 5, 4, 3, 2, 1] + [0.5] * 43), 3, [5.0, 5.0, 5.0]),  # gave [5, 5, 4], converged
    (_rotate(np.r_[7.0, 7.0, 7.0, 7.0, 2.0, np.linspace(0, 1, 60)], 3), 4, [7.0] * 4),
])
def test_eigsh_repeated_eigenvalues_beyond_the_old_block_of_2(A, k, ref):
    """The default block is k columns: every multiplicity among the k wanted is resolved, and
    converged is never true with fewer than k pairs (a review found both with a block of 2)."""
    r = mf.eigsh(A, k, seed=0)
    assert r.converged and len(r.eigenvalues) == k, r.message
    np.testing.assert_allclose(r.eigenvalues, ref, atol=1e-8 * max(ref))


def test_eigsh_smaller_block_says_what_it_cannot_resolve():
    D = np.diag([5.0, 5, 5, 4, 3, 2, 1] + [0.5] * 43)
    r = mf.eigsh(D, 3, block_size=1, seed=0)
    assert "block_size 1 < k" in r.message
    r = mf.eigsh(D, 3, maxiter=1, seed=0)  # one block of 3: 3 pairs, not converged
    assert len(r.eigenvalues) == 3 and not r.converged


def test_operator_that_returns_nan_is_refused_with_a_clear_error():
    def bad(X):
        Y = X.copy()
        Y[3] = np.nan
        return Y
    op = scipy.sparse.linalg.LinearOperator((20, 20), matvec=lambda x: bad(x[:, None])[:, 0], matmat=bad,
                                            dtype=np.float64)
    for call in (lambda: mf.eigsh(op, 2, seed=0), lambda: mf.density(op, n_vectors=2, n_steps=4, seed=0),
                 lambda: mf.trace(op, matvecs=8, seed=0)):
        with pytest.raises(NonFiniteError, match="returned NaN or Inf for a finite input"):
            call()


@pytest.mark.parametrize("method", ["hutch++", "xtrace"])
def test_trace_error_bar_covers_rounding_on_a_low_rank_operator(method):
    """Rank 3 < the sketch: the estimate is exact to rounding, and the sampling spread was smaller than
    that rounding (the true trace fell outside +-2 stderr for 46 of 50 seeds)."""
    A = _rotate(np.r_[3.0, 2.0, 1.0, np.zeros(197)], 5)
    misses = sum(abs((r := mf.trace(A, method=method, matvecs=30, seed=s)).estimate - 6.0) > 2 * r.stderr
                 for s in range(20))
    assert misses <= 2


def test_density_float32_with_an_outlier_keeps_its_steps():
    """An outlier 1e3 x the bulk (a Hessian's usual shape): at float32's eps the breakdown cut-off
    ended the bulk's Lanczos runs after 2-3 steps and the density on the bulk was off by up to 8.8
    (peak 1.17). The cut-off is now float64's; float32 agrees with float64."""
    n = 2000
    A = _rotate(np.r_[1e3, np.linspace(0, 1, n - 1)], 0)
    d64 = mf.density(A, n_vectors=4, n_steps=40, seed=0)
    d32 = mf.density(A.astype(np.float32), n_vectors=4, n_steps=40, seed=0)
    assert d32.matvecs == d64.matvecs == 160
    bulk = (d64.grid > 0) & (d64.grid < 1)
    np.testing.assert_allclose(d32.values[bulk], d64.values[bulk], atol=1e-3 * d64.values[bulk].max())


def test_eigsh_not_converged_when_maxiter_too_small():
    A = wishart()
    r = mf.eigsh(A, 3, which="SA", maxiter=3, seed=0)
    assert not r.converged and r.iterations == 3
    assert "not converged" in r.message
    scale = np.max(np.abs(np.linalg.eigvalsh(A)))
    res = np.linalg.norm(A @ r.eigenvectors - r.eigenvectors * r.eigenvalues, axis=0)
    assert np.max(res) > 1e-8 * scale  # the flag agrees with the residual computed here


def test_eigsh_small_full_space_and_float32():
    A = wishart(6, 20)
    r = mf.eigsh(A, 6, which="SA", seed=0)
    assert r.converged
    np.testing.assert_allclose(r.eigenvalues, np.linalg.eigvalsh(A), atol=1e-12)
    r32 = mf.eigsh(A.astype(np.float32), 2, tol=1e-5, seed=0)
    assert r32.eigenvectors.dtype == np.float32 and r32.converged
    np.testing.assert_allclose(r32.eigenvalues, np.linalg.eigvalsh(A)[::-1][:2], rtol=1e-5)


def test_eigsh_seeded_and_matches_scipy_linear_operator():
    A = lowrank_noise()
    L = scipy.sparse.linalg.aslinearoperator(A)
    a, b = mf.eigsh(L, 2, seed=4), mf.eigsh(A, 2, seed=4)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-13)
    again = mf.eigsh(A, 2, seed=4)
    np.testing.assert_array_equal(again.eigenvalues, b.eigenvalues)  # same seed, same bits
    np.testing.assert_array_equal(again.eigenvectors, b.eigenvectors)
    np.testing.assert_allclose(a.eigenvalues, scipy.sparse.linalg.eigsh(A, 2)[0][::-1], rtol=1e-10)


@pytest.mark.parametrize("args, kw, match", [
    ((0,), {}, r"k must be an integer with 1 <= k <= n = 10; got 0"),
    ((11,), {}, r"1 <= k <= n = 10; got 11"),
    ((2.0,), {}, r"got 2.0"),
    ((2,), {"which": "LR"}, r"which must be one of \('LA', 'SA', 'LM'\); got 'LR'"),
    ((2,), {"tol": 0.0}, r"tol must be a positive finite number; got 0.0"),
    ((2,), {"tol": float("nan")}, r"tol must be a positive finite number; got nan"),
    ((2,), {"maxiter": 0}, r"maxiter must be a positive integer \(block products\); got 0"),
    ((2,), {"block_size": 0}, r"block_size must be a positive integer; got 0"),
])
def test_eigsh_bad_input(args, kw, match):
    with pytest.raises(ParameterError, match=match):
        mf.eigsh(np.eye(10), *args, **kw)


# -- density --------------------------------------------------------------------------------
def test_density_integrates_to_one_and_moments_exact_on_diagonal():
    """Rademacher probes of a diagonal matrix: v^T D^j v = tr(D^j)/n exactly, so every moment
    below 2s is the closed form, to rounding."""
    D = diagonal(150)
    lam = np.diag(D)
    d = mf.density(D, n_vectors=4, n_steps=12, seed=0)
    assert np.trapezoid(d.values, d.grid) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, rtol=1e-12)
    for j in range(0, 8):
        assert d.moment(j) == pytest.approx(np.mean(lam ** j), rel=1e-9, abs=1e-9)
    assert d.trace_of(np.exp) == pytest.approx(np.sum(np.exp(lam)), rel=1e-6)
    assert d.matvecs == 4 * 12 and d.nodes.shape == (4, 12)


def test_density_full_steps_is_the_broadened_spectrum():
    """n_steps = n: each probe's rule is the whole spectral measure, weights 1/n on a diagonal."""
    lam = np.linspace(0.0, 1.0, 40) ** 2
    d = mf.density(np.diag(lam), n_vectors=2, n_steps=40, sigma=0.02, seed=1)
    ref = np.exp(-0.5 * ((d.grid[:, None] - lam[None, :]) / 0.02) ** 2).sum(axis=1) / (40 * 0.02 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(d.values, ref, atol=1e-8)


@pytest.mark.parametrize("name", ["wishart", "lowrank_noise"])
def test_density_gauss_quadrature_and_moments(name):
    A = MARKET[name]()
    n = len(A)
    d = mf.density(A, n_vectors=6, n_steps=10, seed=2)
    V = probe_block(2, DENSITY, n, 6, "rademacher", np.float64)
    V /= np.linalg.norm(V, axis=0)
    Aj = np.eye(n)
    for j in range(0, 8):  # Gauss rule of s=10 nodes: exact for degree < 20
        per_probe = np.sum(d.weights * d.nodes ** j, axis=1)
        np.testing.assert_allclose(per_probe, np.einsum("ij,ij->j", V, Aj @ V), rtol=1e-8)
        # and an unbiased estimate of the closed form tr(A^j)/n, within 4 standard errors
        sem = per_probe.std(ddof=1) / np.sqrt(6)
        assert abs(per_probe.mean() - np.trace(Aj) / n) <= 4 * sem + 1e-12 * abs(np.trace(Aj) / n)
        Aj = Aj @ A
    assert np.trapezoid(d.values, d.grid) == pytest.approx(1.0, abs=1e-6)


def test_density_gram_operator_and_breakdown():
    """Rank-3 Gram: each probe's Krylov space is invariant after 4 steps (3 eigenvectors and the
    null-space part of the probe); the run stops there and its 4-node rule is exact for every moment."""
    A = np.random.default_rng(1).standard_normal((200, 3)) @ np.random.default_rng(2).standard_normal((3, 30))
    G = mf.gram_operator(A)
    d = mf.density(G, n_vectors=3, n_steps=15, seed=0)
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all((d.weights > 0).sum(axis=1) == 4)
    assert d.matvecs == 12 and G.reads == 4
    V = probe_block(0, DENSITY, 30, 3, "rademacher", np.float64)
    V /= np.linalg.norm(V, axis=0)
    M = A.T @ A
    for j in (1, 2, 5, 9):
        np.testing.assert_allclose(np.sum(d.weights * d.nodes ** j, axis=1),
                                   np.einsum("ij,ij->j", V, np.linalg.matrix_power(M, j) @ V), rtol=1e-8)


@pytest.mark.parametrize("kw, exc, match", [
    ({"n_vectors": 0}, ParameterError, r"n_vectors must be an integer >= 1; got 0"),
    ({"n_steps": 2.5}, ParameterError, r"n_steps must be an integer >= 1; got 2.5"),
    ({"sigma": -1.0}, ParameterError, r"sigma must be a positive finite number \(the broadening width\); got -1.0"),
    ({"grid": 1}, ParameterError, r"grid must be an integer >= 2; got 1"),
    ({"grid": np.ones((3, 3))}, ShapeError, r"grid must be a 1-D array of at least 2 points .* got shape \(3, 3\)"),
    ({"probe": "sphere"}, ParameterError, r"probe must be one of"),
])
def test_density_bad_input(kw, exc, match):
    with pytest.raises(exc, match=match):
        mf.density(np.eye(10), **kw)


def test_aslinearoperator_dask_matrix_reads_through_passes():
    """A square symmetric dask matrix: one read per block product, the same eigenpairs as numpy."""
    import dask.array as da

    A = lowrank_noise(120)
    L = mf.aslinearoperator(da.from_array(A, chunks=(25, 120)))
    assert isinstance(L, mf.RowDataOperator)
    np.testing.assert_allclose(L.matmat(np.eye(120)[:, :3]), A[:, :3], rtol=1e-14)
    r = mf.eigsh(L, 3, seed=2)
    np.testing.assert_allclose(r.eigenvalues, mf.eigsh(A, 3, seed=2).eigenvalues, rtol=1e-12)
    assert L.reads == 1 + r.iterations + 1


def test_density_of_an_empty_operator_is_refused():
    with pytest.raises(ShapeError, match="density needs an operator of dimension n >= 1"):
        mf.density(np.zeros((0, 0)))

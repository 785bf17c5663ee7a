"""distsketch.sciml: Butcher tableaux, fixed-step RK integration, and the ODE-net convergence test.

References: exact flows (scipy.linalg.expm) of linear systems; scipy's solve_ivp (DOP853,
rtol 1e-12) for the damped pendulum and Lotka-Volterra; torchdiffeq's fixed-grid solutions
stored by scripts/make_ode_fixtures.py in tests/data/ode_torchdiffeq.npz.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from distsketch.errors import InputTypeError, NonFiniteError, ParameterError, ShapeError
from distsketch.sciml import TABLEAUX, Tableau, convergence_test, convergence_tests, get_tableau, integrate
from distsketch.sciml._tableau import order_of

DATA = os.path.join(os.path.dirname(__file__), "data", "ode_torchdiffeq.npz")
L_SPIRAL = np.array([[-0.5, 1.0], [-1.0, -0.5]])


def linear_field(t, x):
    return x @ L_SPIRAL.T


def pendulum(t, x):
    return np.stack([x[:, 1], -np.sin(x[:, 0]) - 0.2 * x[:, 1]], axis=1)


def lotka_volterra(t, x):
    return np.stack([x[:, 0] - 0.5 * x[:, 0] * x[:, 1], -0.75 * x[:, 1] + 0.25 * x[:, 0] * x[:, 1]], axis=1)


@pytest.fixture(autouse=True)
def serial_unless_cluster(request, monkeypatch):
    """The session LocalCluster's client is the default client once any test made it; tests not marked
    `cluster` run the serial path so their cost does not depend on test order (results are equal)."""
    if request.node.get_closest_marker("cluster") is None:
        import distsketch.sciml._convergence as conv

        monkeypatch.setattr(conv, "_client", lambda: None)


def solve_ivp_reference(f, x0, t1):
    return np.array([solve_ivp(lambda t, y: f(t, y[None])[0], (0.0, t1), xi, method="DOP853", rtol=1e-12,
                               atol=1e-12).y[:, -1] for xi in x0])


# ---------------------------------------------------------------- tableaux

@pytest.mark.parametrize("name, order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4), ("rk4_38", 4)])
def test_named_tableaux_satisfy_their_order_conditions(name, order):
    tab = get_tableau(name)
    assert tab.order == order and order_of(tab.A, tab.b, tab.c) == order
    assert not tab.A.flags.writeable


def test_user_tableau_ralston_converges_at_order_two():
    # Ralston's second-order method: a21 = 2/3, b = (1/4, 3/4)
    tab = Tableau.from_arrays([[0, 0], [2 / 3, 0]], [0.25, 0.75], name="ralston")
    assert tab.order == 2 and np.allclose(tab.c, [0, 2 / 3])
    x0 = np.array([[1.0, 0.0], [0.3, -0.7]])
    res = convergence_test(linear_field, x0, 1.0, integrators=("euler", tab), reference=x0 @ expm(L_SPIRAL).T)
    assert abs(res.orders["ralston"] - 2) < 0.15


@pytest.mark.parametrize("args, kwargs, exc, match", [
    (([[0, 0]], [1.0]), {}, ShapeError, "square"),                       # A not square
    (([[0, 0], [1, 0]], [1.0]), {}, ShapeError, r"b must have shape \(2,\)"),
    (([[0, 0], [1, 0]], [0.5, 0.5]), {"c": [0.0]}, ShapeError, r"c must have shape \(2,\)"),
    (([[0, 0], [1, np.nan]], [0.5, 0.5]), {}, ParameterError, "finite"),
    (([[0.5, 0], [1, 0]], [0.5, 0.5]), {}, ParameterError, "strictly lower triangular"),  # implicit
    (([[0, 0], [1, 0]], [0.5, 0.6]), {}, ParameterError, "sum to 1"),
    (([[0, 0], [1, 0]], [0.5, 0.5]), {"c": [0.0, 0.5]}, ParameterError, r"c = A @ 1"),
    (([[0, 0], [1, 0]], [0.5, 0.5]), {"order": 3}, ParameterError, "claims order 3"),
    (([[0, 0], [1, 0]], [0.5, 0.5]), {"order": 0}, ParameterError, "positive integer"),
])
def test_tableau_validation(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Tableau.from_arrays(*args, **kwargs)


def test_get_tableau_errors():
    with pytest.raises(ParameterError, match="unknown integrator 'rk5'"):
        get_tableau("rk5")
    with pytest.raises(InputTypeError, match="name or a Tableau"):
        get_tableau(4)
    assert get_tableau(TABLEAUX["heun"]) is TABLEAUX["heun"]


# ---------------------------------------------------------------- integration vs torchdiffeq

def _fixture():
    if not os.path.exists(DATA):  # pragma: no cover - the file is committed
        pytest.skip("tests/data/ode_torchdiffeq.npz missing: run scripts/make_ode_fixtures.py")
    return np.load(DATA)


def _mlp_field(d):
    W1, b1, wt, W2, b2 = (d[k] for k in ("W1", "b1", "wt", "W2", "b2"))
    return lambda t, x: np.tanh(x @ W1.T + b1 + t * wt) @ W2.T + b2


# ours -> torchdiffeq's fixed-grid name ("rk4" in torchdiffeq is the 3/8 rule)
TORCHDIFFEQ_NAMES = {"euler": "euler", "midpoint": "midpoint", "rk4_38": "rk4", "heun": "heun2"}


@pytest.mark.parametrize("ours", sorted(TORCHDIFFEQ_NAMES))
def test_integrators_equal_torchdiffeq_fixed_grid(ours):
    d = _fixture()
    f = _mlp_field(d)
    for n in d["steps"]:
        got = integrate(f, d["x0"], float(d["t1"]), t0=float(d["t0"]), n_steps=int(n), method=ours)
        want = d[f"{TORCHDIFFEQ_NAMES[ours]}_{n}"]
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_classical_rk4_differs_from_torchdiffeq_rk4_by_its_truncation_error():
    d = _fixture()
    got = integrate(_mlp_field(d), d["x0"], float(d["t1"]), t0=float(d["t0"]), n_steps=3, method="rk4")
    gap = np.abs(got - d["rk4_3"]).max()
    assert 1e-10 < gap < 1e-2  # two different 4th-order methods: close, not equal


def test_torch_module_field_matches_numpy_field():
    torch = pytest.importorskip("torch")
    d = _fixture()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k in ("W1", "b1", "wt", "W2", "b2"):
                self.register_parameter(k, torch.nn.Parameter(torch.tensor(d[k])))

        def forward(self, t, x):
            return torch.tanh(x @ self.W1.T + self.b1 + t * self.wt) @ self.W2.T + self.b2

    got = integrate(Field(), d["x0"], float(d["t1"]), t0=float(d["t0"]), n_steps=7, method="rk4_38")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, d["rk4_7"], rtol=1e-13, atol=1e-13)


def test_integrate_keeps_float32_shape_and_input():
    x0 = np.array([1.0, -2.0], dtype=np.float32)
    keep = x0.copy()
    x = integrate(lambda t, x: -x, x0, 1.0, n_steps=32, method="rk4")
    assert x.dtype == np.float32 and x.shape == (2,)
    np.testing.assert_allclose(x, keep * np.exp(-1.0), rtol=1e-5)
    np.testing.assert_array_equal(x0, keep)


# ---------------------------------------------------------------- convergence test on true ODEs

def test_linear_system_orders_and_continuous_verdict(rng):
    x0 = rng.standard_normal((16, 2))
    keep = x0.copy()
    res = convergence_test(linear_field, x0, 1.0, reference=lambda t: x0 @ expm(t * L_SPIRAL).T)
    for name, p in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        assert abs(res.orders[name] - p) < 0.15, (name, res.orders)
    assert res.verdict == "continuous", res.reason
    assert "orders" in res.reason and res.reference == "callable"
    assert list(res.table.columns) == ["integrator", "order", "n_steps", "dt", "error", "self_error"]
    assert len(res.table) == 24 and set(res.agreement) == {("euler", "midpoint"), ("euler", "rk4"),
                                                            ("midpoint", "rk4")}
    np.testing.assert_array_equal(x0, keep)


@pytest.mark.parametrize("f, x0, t1", [
    (pendulum, [[1.0, 0.0], [0.5, 0.5], [-1.2, 0.3]], 2.0),
    (lotka_volterra, [[2.0, 1.0], [1.0, 2.0], [3.0, 1.5]], 2.0),
])
def test_nonlinear_systems_against_solve_ivp(f, x0, t1):
    x0 = np.array(x0)
    res = convergence_test(f, x0, t1, reference=solve_ivp_reference(f, x0, t1))
    for name, p in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        assert abs(res.orders[name] - p) < 0.15, (name, res.orders)
    assert res.verdict == "continuous", res.reason


@pytest.mark.parametrize("delta", [1e-2, 1e-3])
def test_slightly_wrong_ode_is_continuous_with_its_model_error_as_plateau(rng, delta):
    # a model that learned the ODE x' = (L + delta E) x: continuous, its plateau is the exact model error
    E = np.array([[0.3, -0.7], [0.2, 0.5]])
    Lm = L_SPIRAL + delta * E
    x0 = rng.standard_normal((16, 2))
    ref = x0 @ expm(L_SPIRAL).T
    model_error = np.linalg.norm(x0 @ expm(Lm).T - ref) / np.linalg.norm(ref)
    res = convergence_test(lambda t, x: x @ Lm.T, x0, 1.0, reference=ref)
    assert res.verdict == "continuous", res.reason
    assert model_error / 1.5 < res.plateau <= model_error
    assert abs(res.orders["euler"] - 1) < 0.15


def test_residual_network_exact_only_for_euler_at_training_step_is_discrete(rng):
    # x_{k+1} = x_k + h0 f(x_k) reproduces the exact flow expm(h0 L) for Euler with h0 = 1/4 only
    h0 = 0.25
    B = (expm(h0 * L_SPIRAL) - np.eye(2)) / h0
    x0 = rng.standard_normal((16, 2))
    ref = x0 @ expm(L_SPIRAL).T
    np.testing.assert_allclose(integrate(lambda t, x: x @ B.T, x0, 1.0, n_steps=4, method="euler"), ref,
                               rtol=1e-12, atol=1e-12)
    res = convergence_test(lambda t, x: x @ B.T, x0, 1.0, reference=ref)
    assert res.verdict == "discrete", res.reason
    best = res.table.loc[res.table.error.idxmin()]
    assert best.integrator == "euler" and best.n_steps == 4
    assert "n_steps=4" in res.reason


def test_no_reference_is_inconclusive_but_measures_convergence(rng):
    x0 = rng.standard_normal((8, 2))
    res = convergence_test(linear_field, x0, 1.0)
    assert res.verdict == "inconclusive" and "reference" in res.reason
    assert res.reference == "finest rk4 solution"
    assert abs(res.orders["euler"] - 1) < 0.15 and abs(res.orders["midpoint"] - 2) < 0.15


def test_nonconvergent_field_is_inconclusive(rng):
    # a field that is not a function of (t, x): noise whose size does not shrink with the step
    x0 = rng.standard_normal((8, 2))
    gen = np.random.default_rng(0)
    res = convergence_test(lambda t, x: linear_field(t, x) + 0.5 * gen.standard_normal(x.shape), x0, 1.0,
                           reference=x0 @ expm(L_SPIRAL).T)
    assert res.verdict == "inconclusive", res.reason


def test_plot_draws_each_integrator(rng):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    x0 = rng.standard_normal((4, 2))
    res = convergence_test(linear_field, x0, 1.0, reference=x0 @ expm(L_SPIRAL).T)
    ax = res.plot()
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert any(lbl.startswith("rk4 (observed 4.0") for lbl in labels) and "dt^4" in labels


@pytest.mark.cluster
def test_dask_client_gives_identical_results(rng, local_cluster_client, monkeypatch):
    from distributed import get_task_stream

    import distsketch.sciml._convergence as conv

    x0 = rng.standard_normal((50, 2))
    W = rng.standard_normal((2, 2))
    f = lambda t, x: np.tanh(x @ W) - 0.3 * x  # noqa: E731 - pickled by value for the workers
    kw = dict(steps=(2, 4, 8), chunk_rows=16, reference=x0)
    with local_cluster_client.as_current(), get_task_stream(local_cluster_client) as ts:
        dist = convergence_test(f, x0, 1.0, **kw)
    chunk_tasks = [t for t in ts.data if "_seeded_chunk" in str(t["key"])]
    assert len(chunk_tasks) == 4  # 50 rows in chunks of 16, one task each, run on the workers
    monkeypatch.setattr(conv, "_client", lambda: None)  # the serial path, as without a client
    serial = convergence_test(f, x0, 1.0, **kw)
    np.testing.assert_array_equal(dist.table[["error", "self_error"]].to_numpy(),
                                  serial.table[["error", "self_error"]].to_numpy())
    assert dist.verdict == serial.verdict and dist.reason == serial.reason


@pytest.mark.cluster
def test_many_models_as_dask_tasks_equal_one_by_one(rng, local_cluster_client, monkeypatch):
    from distributed import get_task_stream

    import distsketch.sciml._convergence as conv

    h0 = 0.25
    B = (expm(h0 * L_SPIRAL) - np.eye(2)) / h0
    x0 = rng.standard_normal((40, 2))
    ref = x0 @ expm(L_SPIRAL).T
    fields = [lambda t, x: x @ L_SPIRAL.T, lambda t, x: x @ B.T]
    with local_cluster_client.as_current(), get_task_stream(local_cluster_client) as ts:
        many = convergence_tests(fields, x0, 1.0, reference=ref, chunk_rows=20)
    assert len([t for t in ts.data if "_seeded_chunk" in str(t["key"])]) == 4  # 2 models x 2 chunks
    assert [r.verdict for r in many] == ["continuous", "discrete"]
    monkeypatch.setattr(conv, "_client", lambda: None)  # one by one, serial
    for f, r in zip(fields, many):
        one = convergence_test(f, x0, 1.0, reference=ref, chunk_rows=20)
        np.testing.assert_array_equal(r.table.error.to_numpy(), one.table.error.to_numpy())


def test_convergence_tests_rejects_bad_fields():
    with pytest.raises(ParameterError, match="fields must be a sequence of models"):
        convergence_tests(linear_field, np.ones((2, 2)), 1.0)
    with pytest.raises(ParameterError, match="at least one model"):
        convergence_tests([], np.ones((2, 2)), 1.0)
    with pytest.raises(ShapeError, match="shape of x"):
        convergence_tests([linear_field, lambda t, x: x[:, 0]], np.ones((2, 2)), 1.0)


# ---------------------------------------------------------------- trained torch models

def _train(torch, method, n_steps, x, y, iters):
    """A 2-8-2 tanh MLP plus a linear term, float64, fitted by L-BFGS through n_steps of `method`."""
    from distsketch.sciml._integrate import _rk_final

    torch.manual_seed(0)

    class ODEFunc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2, bias=False)
            self.l1, self.l2 = torch.nn.Linear(2, 8), torch.nn.Linear(8, 2)
            torch.nn.init.zeros_(self.l2.weight)
            torch.nn.init.zeros_(self.l2.bias)

        def forward(self, t, x):
            return self.lin(x) + self.l2(torch.tanh(self.l1(x)))

    model = ODEFunc().double()
    X, Y = torch.tensor(x), torch.tensor(y)
    tab = get_tableau(method)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=iters, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((_rk_final(model, X, 0.0, 1.0 / n_steps, n_steps, tab, float) - Y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return model


@pytest.fixture
def torch_one_thread():
    """torch with one intra-op thread (tiny tensors: threads only add overhead); restored after."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def spiral_data():
    L = np.array([[-0.1, 1.0], [-1.0, -0.1]])
    g = np.random.default_rng(7)
    xtr, xte = g.standard_normal((64, 2)), g.standard_normal((32, 2))
    return xtr, xtr @ expm(L).T, xte, xte @ expm(L).T


def test_neural_ode_trained_with_rk4_small_steps_is_continuous(spiral_data, torch_one_thread):
    torch = torch_one_thread
    xtr, ytr, xte, yte = spiral_data
    model = _train(torch, "rk4", 8, xtr, ytr, iters=60)
    res = convergence_test(model, xte, 1.0, reference=yte)
    assert res.verdict == "continuous", res.reason
    assert abs(res.orders["euler"] - 1) < 0.3


def test_neural_ode_trained_with_euler_at_one_coarse_step_is_discrete(spiral_data, torch_one_thread):
    torch = torch_one_thread
    xtr, ytr, xte, yte = spiral_data
    model = _train(torch, "euler", 2, xtr, ytr, iters=60)
    res = convergence_test(model, xte, 1.0, reference=yte, seed=3)
    assert res.verdict == "discrete", res.reason
    best = res.table.loc[res.table.error.idxmin()]
    assert best.integrator == "euler" and best.n_steps == 2


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"x0": np.zeros((2, 2, 2))}, ShapeError, r"shape \(dim,\) or a batch"),
    ({"x0": np.zeros((0, 2))}, ShapeError, "at least one state"),
    ({"x0": np.array([[np.nan, 0.0]])}, NonFiniteError, "x0 holds NaN"),
    ({"x0": np.array([["a", "b"]])}, InputTypeError, "real numeric"),
    ({"field": lambda t, x: x[:, :1]}, ShapeError, r"shape of x, \(batch, dim\) = \(1, 2\)"),
    ({"field": 3}, InputTypeError, "callable"),
    ({"t1": 0.0}, ParameterError, "finite and distinct"),
    ({"t1": "end"}, ParameterError, "real numbers"),
    ({"steps": (4, 8, 8)}, ParameterError, "at least three distinct"),
    ({"steps": (0, 4, 8)}, ParameterError, "positive integer"),
    ({"steps": 8}, ParameterError, "sequence of positive integers"),
    ({"integrators": ("rk4", "rk4")}, ParameterError, "distinct"),
    ({"integrators": "rk4"}, ParameterError, "sequence of names"),
    ({"reference": np.zeros(3)}, ShapeError, "reference at t1 must be shaped like x0"),
    ({"reference": lambda t: np.zeros((5, 2))}, ShapeError, "reference at t1 must be shaped like x0"),
    ({"reference": {"t1": 1}}, InputTypeError, "reference must be a callable"),
    ({"reference": np.full((3, 2), np.inf)}, NonFiniteError, "reference holds NaN"),
    ({"chunk_rows": 0}, ParameterError, "chunk_rows must be a positive integer"),
    ({"seed": -1}, ParameterError, "seed must be a non-negative integer"),
])
def test_convergence_test_rejects_bad_input(kwargs, exc, match):
    args = {"field": linear_field, "x0": np.ones((3, 2)), "t1": 1.0, **kwargs}
    with pytest.raises(exc, match=match):
        convergence_test(args.pop("field"), args.pop("x0"), args.pop("t1"), **args)


def test_integrate_rejects_bad_steps():
    with pytest.raises(ParameterError, match="n_steps must be a positive integer"):
        integrate(linear_field, np.ones(2), 1.0, n_steps=2.5)


def test_import_distsketch_does_not_import_torch_or_pandas():
    code = "import sys, distsketch, distsketch.sciml; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert out.stdout.split() == ["False", "False"]


def test_seed_fixes_a_random_torch_field_and_keeps_the_callers_rng(torch_one_thread):
    torch = torch_one_thread

    class Noisy(torch.nn.Module):
        def forward(self, t, x):
            return -x + 1e-3 * torch.randn_like(x)

    x0 = np.random.default_rng(1).standard_normal((40, 2))
    state = torch.get_rng_state()
    kw = dict(steps=(2, 4, 8), reference=x0 * np.exp(-1.0), chunk_rows=16)
    a = convergence_test(Noisy(), x0, 1.0, seed=5, **kw)
    b = convergence_test(Noisy(), x0, 1.0, seed=5, **kw)
    c = convergence_test(Noisy(), x0, 1.0, seed=6, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a.table.error.to_numpy(), b.table.error.to_numpy())
    assert not np.array_equal(a.table.error.to_numpy(), c.table.error.to_numpy())


def test_docstring_examples_run():
    import doctest

    import distsketch.sciml._convergence as conv
    import distsketch.sciml._integrate as integ

    for mod in (conv, integ):
        out = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert out.attempted > 0 and out.failed == 0, mod.__name__

"""distsketch.hessian against the full Hessian torch computes exactly for a small float64 network."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from distsketch.errors import (InputTypeError, MissingDependencyError, ParameterError,  # noqa: E402
                               ShapeError)
from distsketch.hessian import HessianAnalysis, analyze, hessian_operator, plot_density  # noqa: E402

SIZES = (13, 20, 7, 20)  # uneven batches: the sample weights n_b / N matter


def _model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    # 6*16+16 + 16*4+4 = 180 parameters; tanh keeps the Hessian smooth and indefinite
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).to(dtype)


def _data(dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64).to(dtype)  # the same samples in any dtype
    y = torch.randint(0, 4, (n,), generator=g)
    cuts = np.cumsum((0,) + SIZES)
    return x, y, [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


LOSS = torch.nn.CrossEntropyLoss()


def _full_hessian(model, x, y, names=None):
    """The Hessian of the mean loss over all samples at once (torch.autograd.functional.hessian)."""
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    fixed = {k: v.detach() for k, v in named.items() if k not in names}

    def f(*ps):
        out = torch.func.functional_call(model, {**fixed, **dict(zip(names, ps))}, (x,))
        return LOSS(out, y)

    ps = tuple(named[k].detach() for k in names)
    blocks = torch.autograd.functional.hessian(f, ps)
    sizes = [p.numel() for p in ps]
    return np.block([[blocks[i][j].reshape(sizes[i], sizes[j]).numpy() for j in range(len(ps))]
                     for i in range(len(ps))])


@pytest.fixture(scope="module")
def problem():
    model = _model()
    x, y, batches = _data()
    return model, x, y, batches, _full_hessian(model, x, y)


@pytest.mark.parametrize("method", ["func", "autograd"])
def test_products_equal_full_hessian(problem, method):
    model, x, y, batches, H = problem
    op = hessian_operator(model, LOSS, batches, method=method, client=False)
    assert op.shape == H.shape == (180, 180) and op.dtype == np.float64
    X = np.random.default_rng(0).standard_normal((180, 5))
    X0 = X.copy()
    HX = op.matmat(X)
    np.testing.assert_allclose(HX, H @ X, rtol=0, atol=1e-13 * np.abs(H @ X).max())
    np.testing.assert_array_equal(X, X0)  # the caller's block is not touched
    np.testing.assert_allclose(op.matvec(X[:, 0]), HX[:, 0], rtol=1e-14, atol=1e-16)
    assert op.hvps == 6 and op.n_samples == sum(SIZES) and op.n_batches == 4


@pytest.mark.parametrize("method", ["func", "autograd"])
def test_mse_loss_products_equal_full_hessian(method):
    """mse_loss has no forward-mode rule inside grad in torch 2.13 ("ZeroTensors are immutable"):
    the func path falls back to reverse-over-reverse and still equals torch's full Hessian."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    mse = torch.nn.functional.mse_loss
    names = [k for k, _ in model.named_parameters()]
    ps = tuple(p.detach() for p in model.parameters())

    def f(*q):
        return mse(torch.func.functional_call(model, dict(zip(names, q)), (x,)), y)

    blocks = torch.autograd.functional.hessian(f, ps)
    sizes = [p.numel() for p in ps]
    H = np.block([[blocks[i][j].reshape(sizes[i], sizes[j]).numpy() for j in range(len(ps))]
                  for i in range(len(ps))])
    op = hessian_operator(model, mse, [(x[:25], y[:25]), (x[25:], y[25:])], method=method, client=False)
    X = np.random.default_rng(1).standard_normal((H.shape[0], 3))
    np.testing.assert_allclose(op.matmat(X), H @ X, rtol=0, atol=1e-12 * np.abs(H @ X).max())


def test_one_pair_and_one_batch_give_the_same_hessian(problem):
    model, x, y, batches, H = problem
    op = hessian_operator(model, LOSS, (x, y), client=False)  # one (inputs, targets) pair
    assert op.n_batches == 1
    X = np.random.default_rng(1).standard_normal((180, 3))
    np.testing.assert_allclose(op.matmat(X), H @ X, rtol=0, atol=1e-13 * np.abs(H @ X).max())


def test_model_left_as_it_was(problem):
    model, x, y, batches, H = problem
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hessian_operator(model, LOSS, batches, client=False).matmat(np.ones((180, 2)))
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_params_subset(problem):
    model, x, y, batches, H = problem
    # the last layer's weight and the first layer's bias, named in the opposite order of the model
    names = ["2.weight", "0.bias"]
    op = hessian_operator(model, LOSS, batches, params=names, client=False)
    assert op.param_names == ("0.bias", "2.weight") and op.n_params == 16 + 64
    Hs = _full_hessian(model, x, y, names=["0.bias", "2.weight"])
    np.testing.assert_allclose(Hs, H[np.r_[96:112, 112:176]][:, np.r_[96:112, 112:176]], atol=1e-14)
    X = np.random.default_rng(2).standard_normal((80, 4))
    np.testing.assert_allclose(op.matmat(X), Hs @ X, rtol=0, atol=1e-13 * np.abs(Hs @ X).max())
    # parameters themselves work as names
    op2 = hessian_operator(model, LOSS, batches, params=[model[2].weight, model[0].bias], client=False)
    np.testing.assert_array_equal(op2.matmat(X), op.matmat(X))
    t = op.to_tensors(X[:, 0])
    assert t["2.weight"].shape == (4, 16)
    np.testing.assert_array_equal(op.to_vector(t), X[:, 0])


def test_float32_stays_float32():
    model = _model(torch.float32)
    x, y, batches = _data(torch.float32)
    op = hessian_operator(model, LOSS, batches, client=False)
    assert op.dtype == np.float32
    HX = op.matmat(np.ones((180, 2), dtype=np.float64))
    assert HX.dtype == np.float32
    H = _full_hessian(_model(torch.float64), *_data()[:2])
    np.testing.assert_allclose(HX, (H @ np.ones((180, 2))).astype(np.float32), atol=1e-5 * np.abs(H).sum(1).max())


def test_analyze_against_dense_eigh(problem):
    model, x, y, batches, H = problem
    lam = np.linalg.eigvalsh(H)[::-1]
    # one (inputs, targets) pair: the same Hessian as the batches, a quarter of the products' overhead
    r = analyze(model, LOSS, (x, y), top_k=3, seed=7, tol=1e-10, n_vectors=6, n_steps=30, client=False)
    assert isinstance(r, HessianAnalysis) and r.converged and r.seed == 7
    np.testing.assert_allclose(r.eigenvalues, lam[:3], rtol=1e-6)
    res = np.linalg.norm(H @ r.eigenvectors - r.eigenvectors * r.eigenvalues, axis=0)
    assert np.all(res <= 1e-8 * abs(lam).max())
    # Hutch++ within two of its standard errors of the exact trace
    assert abs(r.trace - np.trace(H)) <= 2 * r.trace_stderr
    assert r.hvps == r.hvps_eigenvalues + r.hvps_trace + r.hvps_density and r.hvps_trace == 99
    # the density integrates to 1; its first two moments are SLQ estimates of tr(H^j)/n, whose
    # spread with N Gaussian or Rademacher probes is at most sqrt(2 ||H^j||_F^2 / N) / n
    assert abs(np.trapezoid(r.density, r.density_grid) - 1) < 1e-3
    n, N = H.shape[0], r.density_nodes.shape[0]
    for j in (1, 2):
        Hj = np.linalg.matrix_power(H, j)
        est = np.mean(np.sum(r.density_weights * r.density_nodes ** j, axis=1))
        sd = np.sqrt(2 * np.sum(Hj ** 2) / N) / n
        assert abs(est - np.trace(Hj) / n) <= 4 * sd
    # the same seed, the same numbers
    r2 = analyze(model, LOSS, (x, y), top_k=0, density=False, seed=7, client=False)
    assert r2.trace == r.trace and r2.hvps == 99


def test_plot_density(problem):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, x, y, batches, H = problem
    r = analyze(model, LOSS, (x, y), top_k=1, trace=False, n_vectors=2, n_steps=20, seed=0, client=False)
    ax = plot_density(r)
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), r.density_grid)
    assert ax.get_yscale() == "log"
    plt.close(ax.figure)
    no_density = analyze(model, LOSS, (x, y), top_k=0, trace=False, density=False, seed=0, client=False)
    assert no_density.density.size == 0 and np.isnan(no_density.trace) and no_density.hvps == 0
    with pytest.raises(ParameterError, match="density=True"):
        plot_density(no_density)


@pytest.mark.cluster
def test_one_and_two_dask_workers_identical(problem, local_cluster_client):
    model, x, y, batches, H = problem
    client = local_cluster_client
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    assert len(workers) == 2
    X = np.random.default_rng(3).standard_normal((180, 4))
    with hessian_operator(model, LOSS, batches, client=client, workers=workers[:1]) as one, \
            hessian_operator(model, LOSS, batches, client=client) as two:
        assert one.workers == tuple(workers[:1]) and two.workers == tuple(workers)
        assert two.n_shards == 4  # one batch per shard, dealt over both workers
        a, b = one.matmat(X), two.matmat(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, H @ X, rtol=0, atol=1e-13 * np.abs(H @ X).max())
    # analyze through the client (a few block products: each costs a round trip to the workers)
    opts = dict(top_k=0, trace_matvecs=9, n_vectors=2, n_steps=4, seed=3)
    r1 = analyze(model, LOSS, batches, client=client, **opts)
    r0 = analyze(model, LOSS, batches, client=False, **opts)
    assert r1.hvps == r0.hvps == 9 + 8
    np.testing.assert_allclose(r1.trace, r0.trace, rtol=1e-12)
    np.testing.assert_allclose(r1.density_nodes, r0.density_nodes, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs, exc, match", [
    # not a module / not callable
    (dict(model="net"), InputTypeError, "torch.nn.Module; received str"),
    (dict(loss_fn=3), InputTypeError, "loss_fn must be callable"),
    (dict(method="hvp"), ParameterError, r"method must be one of \['func', 'autograd'\]; received 'hvp'"),
    (dict(params=["0.weight", "nope"]), ParameterError, "'nope', which is not a parameter"),
    (dict(params=[]), ParameterError, "params is empty"),
    (dict(params=[torch.zeros(3)]), ParameterError, "not a parameter of the model"),
    (dict(data=[]), ParameterError, "data holds no batches"),
    (dict(data=5), InputTypeError, "received int"),
    (dict(data=[(torch.zeros(2, 6),)]), InputTypeError, "batch 0 of data must be an .inputs, targets. pair"),
    (dict(data=[(np.zeros((2, 6)), torch.zeros(2))]), InputTypeError, "must be torch tensors"),
    (dict(data=[(torch.zeros(0, 6), torch.zeros(0))]), ShapeError, "batch 0 has no samples"),
    (dict(n_shards=0), ParameterError, "n_shards must be a positive integer; received 0"),
    (dict(workers=["tcp://x"]), ParameterError, "workers names Dask workers, but there is no Dask client"),
])
def test_bad_input(problem, kwargs, exc, match):
    model, x, y, batches, H = problem
    args = dict(model=model, loss_fn=LOSS, data=batches, client=False) | kwargs
    with pytest.raises(exc, match=match):
        hessian_operator(args.pop("model"), args.pop("loss_fn"), args.pop("data"), **args)


def test_bad_input_operator_and_analyze(problem):
    model, x, y, batches, H = problem
    frozen = _model()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ParameterError, match="no parameter with requires_grad=True"):
        hessian_operator(frozen, LOSS, batches, client=False)
    mixed = _model()
    mixed[2].float()
    with pytest.raises(InputTypeError, match="share one floating dtype"):
        hessian_operator(mixed, LOSS, batches, client=False)
    op = hessian_operator(model, LOSS, batches, client=False)
    with pytest.raises(ShapeError, match=r"X of shape \(180, b\)"):
        op.matmat(np.ones((179, 2)))
    with pytest.raises(ShapeError, match="matvec needs a vector of length 180"):
        op.matvec(np.ones((180, 1, 1)))
    with pytest.raises(ShapeError, match=r"to_tensors needs a vector of shape \(180,\)"):
        op.to_tensors(np.ones(3))
    assert op.hvps == 0  # refused before any product
    with pytest.raises(ParameterError, match="top_k must be at most the number of parameters"):
        analyze(model, LOSS, batches, top_k=181, client=False)
    with pytest.raises(ParameterError, match="top_k must be a non-negative integer; received -1"):
        analyze(model, LOSS, batches, top_k=-1, client=False)
    # a loss that is not a scalar (reduction='none'): a clear error, not torch's "grad ... scalar outputs"
    op_none = hessian_operator(model, torch.nn.CrossEntropyLoss(reduction="none"), batches, client=False)
    with pytest.raises(InputTypeError, match=r"loss_fn must return a scalar .* tensor of shape \(\d+,\)"):
        op_none.matmat(np.ones((180, 1)))
    # refused before the eigenvalue pass spends its products (it was checked by the trace, after them)
    with pytest.raises(ParameterError, match="trace_matvecs must be >= 4 for the Hutch\\+\\+ trace; received 2"):
        analyze(model, LOSS, batches, trace_matvecs=2, client=False)


@pytest.mark.cluster
def test_unknown_worker(problem, local_cluster_client):
    model, x, y, batches, H = problem
    with pytest.raises(ParameterError, match="workers must name workers of the client"):
        hessian_operator(model, LOSS, batches, client=local_cluster_client, workers=["tcp://127.0.0.1:1"])


def test_missing_torch_is_a_clear_error(monkeypatch):
    for name in [m for m in sys.modules if m == "distsketch.hessian" or m.startswith("distsketch.hessian.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" raises ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "distsketch\[hessian\]"') as info:
        import distsketch.hessian  # noqa: F401
    assert isinstance(info.value, ImportError)


def test_import_distsketch_does_not_import_torch():
    code = "import sys, distsketch, distsketch.matfree; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

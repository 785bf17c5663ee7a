"""The Hessian of a torch model's mean loss over a data set, as a matrix-free operator.

``H = (1/N) sum_b n_b H_b`` where ``H_b`` is the Hessian of batch ``b``'s (mean) loss with
respect to the chosen parameters and ``n_b`` its number of samples: the Hessian of the
sample-weighted mean loss over all the data. Products ``H V`` for a block ``V`` of vectors are
computed batch by batch (forward-over-reverse ``torch.func.jvp(grad(loss))``, vectorised over
the block's columns by ``vmap``; or double backward through ``torch.autograd.grad``), summed in a
fixed order: batches are grouped into contiguous *shards* whose number depends only on the
number of batches; each shard's weighted sum is formed in batch order, and the shards' sums are
added in shard order. On Dask workers (when a ``distributed`` client is active) the shards are
dealt to the workers, which keep the model and their shards' batches in memory; because the
summation tree does not depend on the worker count, 1 and 2 workers give bit-identical products.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..errors import InputTypeError, ParameterError, ShapeError

__all__ = ["HessianOperator", "hessian_operator"]

_METHODS = ("func", "autograd")
_MAX_SHARDS = 8


def _as_batches(data) -> list[tuple]:
    """``data`` as a list of ``(inputs, targets)`` pairs (one pair is one batch)."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor | tuple) \
            and isinstance(data[1], torch.Tensor):
        batches = [tuple(data)]
    elif isinstance(data, Iterable) and not isinstance(data, torch.Tensor | str | bytes):
        batches = list(data)
    else:
        raise InputTypeError(
            f"data must be one (inputs, targets) pair of tensors or an iterable of such pairs (a DataLoader, "
            f"a list); received {type(data).__name__}. Pass e.g. data=(x, y) or data=DataLoader(...).")
    if not batches:
        raise ParameterError("data holds no batches; received an empty iterable. Pass at least one "
                             "(inputs, targets) pair.")
    out = []
    for i, b in enumerate(batches):
        if not (isinstance(b, tuple | list) and len(b) == 2):
            raise InputTypeError(f"batch {i} of data must be an (inputs, targets) pair; received "
                                 f"{type(b).__name__}{'' if not hasattr(b, '__len__') else f' of length {len(b)}'}. "
                                 "Yield (inputs, targets) from the data loader.")
        x, y = b
        xs = x if isinstance(x, tuple | list) else (x,)
        if not xs or not all(isinstance(t, torch.Tensor) for t in xs) or not isinstance(y, torch.Tensor):
            raise InputTypeError(f"batch {i}: inputs and targets must be torch tensors (inputs may be a tuple "
                                 f"of tensors); received {type(x).__name__} and {type(y).__name__}. "
                                 "Convert with torch.as_tensor.")
        n = int(xs[0].shape[0]) if xs[0].ndim else 0
        if n < 1:
            raise ShapeError(f"batch {i} has no samples (inputs of shape {tuple(xs[0].shape)}); every batch "
                             "needs a leading sample dimension of length >= 1.")
        out.append((tuple(xs) if isinstance(x, tuple | list) else x, y))
    return out


def _n_samples(batch) -> int:
    x = batch[0]
    return int((x[0] if isinstance(x, tuple) else x).shape[0])


def _select_params(model, params) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the parameters to differentiate by, and of every other parameter."""
    named = dict(model.named_parameters())
    if params is None:
        chosen = [k for k, p in named.items() if p.requires_grad]
        if not chosen:
            raise ParameterError("the model has no parameter with requires_grad=True; received a model whose "
                                 "parameters are all frozen. Name the parameters with params=[...].")
    else:
        if isinstance(params, str | torch.Tensor):
            params = [params]
        by_id = {id(p): k for k, p in named.items()}
        chosen = []
        for p in params:
            if isinstance(p, torch.Tensor):
                if id(p) not in by_id:
                    raise ParameterError("params holds a tensor that is not a parameter of the model; pass "
                                         "parameter names (see model.named_parameters()) or the model's own "
                                         "parameter tensors.")
                p = by_id[id(p)]
            if p not in named:
                raise ParameterError(f"params names {p!r}, which is not a parameter of the model; its "
                                     f"parameters are {sorted(named)}.")
            if p not in chosen:
                chosen.append(p)
        if not chosen:
            raise ParameterError("params is empty; name at least one parameter of the model, or pass "
                                 "params=None for all parameters with requires_grad=True.")
        order = {k: i for i, k in enumerate(named)}
        chosen.sort(key=order.__getitem__)  # the model's own order, whatever order they were named in
    dtypes = {named[k].dtype for k in chosen}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise InputTypeError(f"the chosen parameters must share one floating dtype; received "
                             f"{sorted(str(d) for d in dtypes)}. Convert the model with model.double() or "
                             "model.float(), or choose parameters of one dtype with params=[...].")
    return tuple(chosen), tuple(k for k in named if k not in chosen)


class _Context:
    """What a worker (or the caller's process) needs to form products: model, loss, names."""

    def __init__(self, model, loss_fn, names, method):
        self.model = model
        self.loss_fn = loss_fn
        self.names = tuple(names)
        self.method = method

    def product(self, batches, X: np.ndarray) -> np.ndarray:
        """``sum_b n_b H_b X`` over ``batches`` in their order, as a float array like ``X``."""
        model = self.model
        named = dict(model.named_parameters())
        live = {k: named[k].detach() for k in self.names}
        fixed = {k: v.detach() for k, v in itertools.chain(named.items(), model.named_buffers()) if k not in live}
        shapes = [live[k].shape for k in self.names]
        sizes = [live[k].numel() for k in self.names]
        Xt = torch.from_numpy(X)
        cols = X.shape[1]
        # V[k] has shape (cols, *param_shape): column j of X cut into the parameters' shapes
        V = {k: Xt[o:o + s].T.reshape((cols, *sh)).contiguous()
             for k, o, s, sh in zip(self.names, np.cumsum([0, *sizes[:-1]]), sizes, shapes)}
        total = None
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                hv = self._batch_product(live, fixed, V, batch)
                w = float(_n_samples(batch))
                flat = torch.cat([hv[k].reshape(cols, -1) for k in self.names], dim=1)  # (cols, n)
                total = flat * w if total is None else total.add_(flat, alpha=w)
        finally:
            model.train(was_training)
        return np.ascontiguousarray(total.T.numpy())

    def _batch_product(self, live, fixed, V, batch):
        from torch.func import functional_call

        x, y = batch
        args = x if isinstance(x, tuple) else (x,)
        model, loss_fn = self.model, self.loss_fn

        def loss_of(p):
            loss = loss_fn(functional_call(model, {**fixed, **p}, args), y)
            if loss.ndim != 0:  # reduction='none': torch's own error would only say "grad ... scalar outputs"
                raise InputTypeError(f"loss_fn must return a scalar (the batch's mean loss, e.g. reduction='mean'); "
                                     f"it returned a tensor of shape {tuple(loss.shape)}")
            return loss

        if self.method == "func":
            from torch.func import grad, jvp, vjp, vmap

            g = grad(loss_of)

            def hvp_forward(v):  # forward-over-reverse: H v as the directional derivative of the gradient
                return jvp(g, (live,), (v,))[1]

            def hvp_reverse(v):  # reverse-over-reverse: v^T H = (H v)^T, H symmetric
                return vjp(g, live)[1](v)[0]

            if not getattr(self, "_reverse_only", False):
                try:
                    return vmap(hvp_forward)(V)
                except RuntimeError:
                    # some losses lack forward-mode rules inside grad (torch 2.13's mse_loss raises
                    # "ZeroTensors are immutable"): the same product by reverse mode, from now on
                    self._reverse_only = True
            return vmap(hvp_reverse)(V)
        # double backward: one graph of the gradient per batch, one backward through it per column
        with torch.enable_grad():
            p = {k: t.clone().requires_grad_(True) for k, t in live.items()}
            gr = torch.autograd.grad(loss_of(p), [p[k] for k in self.names], create_graph=True)
            cols = next(iter(V.values())).shape[0]
            outs = []
            for j in range(cols):
                hv = torch.autograd.grad(gr, [p[k] for k in self.names], grad_outputs=[V[k][j] for k in self.names],
                                         retain_graph=j < cols - 1, allow_unused=True)
                outs.append([torch.zeros_like(p[k]) if h is None else h for k, h in zip(self.names, hv)])
        return {k: torch.stack([o[i] for o in outs]) for i, k in enumerate(self.names)}


def _shard_product(ctx: _Context, batches, X: np.ndarray) -> np.ndarray:  # runs on a Dask worker
    return ctx.product(batches, X)


class HessianOperator:
    """Hessian of the sample-weighted mean loss over ``data``: ``shape``, ``dtype``, ``matmat``.

    Made by :func:`hessian_operator`; see there. Attributes ``param_names`` (the order of the
    parameters in a vector), ``n_params``, ``n_samples``, ``n_batches``, ``n_shards``,
    ``hvps`` (Hessian-vector products formed so far, one per column of each ``matmat``) and
    ``workers`` (Dask worker addresses, empty when products run in this process).
    Use as a context manager, or call :meth:`close`, to release the data held on workers.
    """

    def __init__(self, model, loss_fn, batches, names, *, method, client, n_shards, workers=None):
        self._ctx = _Context(model, loss_fn, names, method)
        named = dict(model.named_parameters())
        self.param_names = tuple(names)
        self.param_shapes = tuple(tuple(named[k].shape) for k in names)
        self.n_params = int(sum(named[k].numel() for k in names))
        self.dtype = np.dtype(str(named[names[0]].dtype).replace("torch.", ""))
        self.shape = (self.n_params, self.n_params)
        self.n_batches = len(batches)
        self.n_samples = int(sum(_n_samples(b) for b in batches))
        self.method = method
        self.hvps = 0
        # contiguous shards of (near) equal batch counts; their number depends on the batches only
        cuts = np.cumsum([0] + [len(c) for c in np.array_split(np.arange(len(batches)), n_shards)])
        self._shards = [batches[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        self.n_shards = len(self._shards)
        self._client = client
        self.workers: tuple[str, ...] = ()
        if client is not None:
            known = sorted(client.scheduler_info(n_workers=-1)["workers"])
            if not known:
                raise ParameterError("the Dask client has no workers; start workers or pass client=False to "
                                     "form the products in this process.")
            if workers is None:
                workers = known
            else:
                workers = [workers] if isinstance(workers, str) else list(workers)
                unknown = [w for w in workers if w not in known]
                if unknown or not workers:
                    raise ParameterError(f"workers must name workers of the client ({known}); received "
                                         f"{unknown or workers}. Pass addresses from "
                                         "client.scheduler_info()['workers'], or workers=None for all.")
                workers = sorted(set(workers))
            self.workers = tuple(workers)
            self._ctx_futures = {w: client.scatter(self._ctx, workers=[w], hash=False) for w in workers}
            self._placed = []
            for i, shard in enumerate(self._shards):
                w = workers[i % len(workers)]
                self._placed.append((w, client.scatter(shard, workers=[w], hash=False)))

    def matmat(self, X) -> np.ndarray:
        """``H @ X`` for ``X`` of shape ``(n_params, b)``; ``b`` Hessian-vector products."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != self.n_params:
            raise ShapeError(f"matmat needs X of shape ({self.n_params}, b) (one column per vector); received "
                             f"shape {X.shape}. Reshape with X.reshape({self.n_params}, -1).")
        X = np.array(X, dtype=self.dtype, order="C", copy=True)  # never hand the caller's array to torch
        if X.shape[1] == 0:
            return X
        if self._client is None:
            parts = [self._ctx.product(shard, X) for shard in self._shards]
        else:
            client = self._client
            xf = client.scatter(X, broadcast=True, hash=False)
            futs = [client.submit(_shard_product, self._ctx_futures[w], sf, xf, workers=[w], pure=False)
                    for w, sf in self._placed]
            parts = client.gather(futs)
            del futs, xf
        total = parts[0]
        for p in parts[1:]:  # shard order: the same association for any number of workers
            total = total + p
        total /= self.n_samples
        self.hvps += X.shape[1]
        return total

    def matvec(self, x) -> np.ndarray:
        """``H @ x`` for one vector (one Hessian-vector product)."""
        x = np.asarray(x)
        if x.ndim != 1:
            raise ShapeError(f"matvec needs a vector of length {self.n_params}; received shape {x.shape}. "
                             "Use matmat for blocks of vectors.")
        return self.matmat(x[:, None])[:, 0]

    def __matmul__(self, X):
        X = np.asarray(X)
        return self.matvec(X) if X.ndim == 1 else self.matmat(X)

    def to_vector(self, tensors) -> np.ndarray:
        """Concatenate per-parameter tensors (a dict by name, or a sequence in ``param_names`` order)."""
        if isinstance(tensors, dict):
            tensors = [tensors[k] for k in self.param_names]
        return np.concatenate([np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t,
                                          dtype=self.dtype).ravel() for t in tensors])

    def to_tensors(self, x) -> dict:
        """Split a vector of length ``n_params`` into tensors shaped like the parameters (by name)."""
        x = np.asarray(x)
        if x.shape != (self.n_params,):
            raise ShapeError(f"to_tensors needs a vector of shape ({self.n_params},); received {x.shape}.")
        out, o = {}, 0
        for k, sh in zip(self.param_names, self.param_shapes):
            s = int(np.prod(sh, dtype=np.int64))
            out[k] = torch.from_numpy(np.array(x[o:o + s]).reshape(sh))
            o += s
        return out

    def close(self) -> None:
        """Release the model and batches held on Dask workers (nothing to do in-process)."""
        if self._client is not None:
            self._placed = []
            self._ctx_futures = {}
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        where = f"{len(self.workers)} Dask workers" if self.workers else "in process"
        return (f"HessianOperator(n_params={self.n_params}, dtype={self.dtype}, n_samples={self.n_samples}, "
                f"n_batches={self.n_batches}, method={self.method!r}, {where}, hvps={self.hvps})")


def _active_client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def hessian_operator(model, loss_fn, data, *, params=None, method: str = "func", client=None,
                     workers=None, n_shards: int | None = None) -> HessianOperator:
    """The Hessian of a model's sample-weighted mean loss over ``data``, seen through products.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated in eval mode (as PyHessian does: dropout off, batch-norm running statistics),
        its training flag restored after each product. Neither its parameters nor its
        gradients are changed.
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` -> a scalar: the batch's *mean* loss (for example
        ``torch.nn.CrossEntropyLoss()``). Batch ``b`` of ``n_b`` samples enters with weight
        ``n_b / N``.
    data : (inputs, targets) or iterable of (inputs, targets)
        One batch, or batches (a ``DataLoader``, a list). Read once, at construction, into a
        list: later products use the same batches in the same order. ``inputs`` may be a
        tuple of tensors (passed as positional arguments).
    params : sequence of str or of the model's parameters, optional
        The parameters to differentiate by (names from ``model.named_parameters()``); default
        all with ``requires_grad=True``. Vectors follow the model's parameter order.
    method : {"func", "autograd"}, default "func"
        ``"func"``: forward-over-reverse ``jvp(grad(loss))`` vectorised over a block's columns
        with ``torch.func.vmap`` (one pass over a batch per block). ``"autograd"``: double
        backward, one graph of the gradient per batch and one backward through it per column
        (for models ``vmap`` cannot trace).
    client : distributed.Client, False or None
        None (default): the active Dask client if there is one, else this process. ``False``:
        always this process.
    workers : sequence of str, optional
        Addresses of the client's workers to use (default all of them).
    n_shards : int, optional
        Groups of contiguous batches summed together (default ``min(n_batches, 8)``). It fixes
        the summation order, so results do not depend on the number of workers; at least the
        number of workers keeps them all busy.

    Returns
    -------
    HessianOperator
        ``shape = (n_params, n_params)``, ``dtype`` of the parameters, ``matmat(X)``,
        ``matvec(x)``, ``hvps`` (products so far), ``to_tensors``/``to_vector``.

    Raises
    ------
    InputTypeError
        ``model`` is not a ``torch.nn.Module``, ``loss_fn`` not callable, a batch not a pair
        of tensors, or the chosen parameters not of one floating dtype.
    ParameterError
        Unknown parameter names, no parameters, empty data, an unknown ``method``.

    Notes
    -----
    One product ``H X`` with ``X`` of ``b`` columns costs ``b`` Hessian-vector products: for each
    batch one forward and one backward pass, differentiated once more forward (``"func"``;
    about 2-3 times a gradient's cost per column, shared work vectorised across columns) or one
    extra backward per column (``"autograd"``). Memory per batch grows with ``b`` times the
    activations (``"func"``). With Dask, the model and each shard's batches are sent to a
    worker once; each product sends ``X`` to every worker and gets one ``n_params x b`` array
    back per shard.

    References
    ----------
    .. [1] Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.
    .. [2] Yao, Gholami, Keutzer, Mahoney, "PyHessian: Neural networks through the lens of the
       Hessian", arXiv 1912.07145.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from distsketch.hessian import hessian_operator
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> model = torch.nn.Linear(3, 2).double()
    >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    >>> H = hessian_operator(model, torch.nn.CrossEntropyLoss(), (x, y), client=False)
    >>> H.shape, H.matmat(np.eye(8)).shape, H.hvps
    ((8, 8), (8, 8), 8)
    """
    if not isinstance(model, torch.nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; received {type(model).__name__}.")
    if not callable(loss_fn):
        raise InputTypeError(f"loss_fn must be callable as loss_fn(outputs, targets); received "
                             f"{type(loss_fn).__name__}.")
    if method not in _METHODS:
        raise ParameterError(f"method must be one of {list(_METHODS)}; received {method!r}.")
    names, _ = _select_params(model, params)
    batches = _as_batches(data)
    if n_shards is None:
        n_shards = min(len(batches), _MAX_SHARDS)
    elif not isinstance(n_shards, int | np.integer) or isinstance(n_shards, bool) or not 1 <= n_shards:
        raise ParameterError(f"n_shards must be a positive integer; received {n_shards!r}.")
    n_shards = min(int(n_shards), len(batches))
    if client is None:
        client = _active_client()
    elif client is False:
        client = None
    if workers is not None and client is None:
        raise ParameterError("workers names Dask workers, but there is no Dask client (client=False or none "
                             "active); pass a client, or leave workers=None.")
    return HessianOperator(model, loss_fn, batches, names, method=method, client=client, n_shards=n_shards,
                           workers=workers)

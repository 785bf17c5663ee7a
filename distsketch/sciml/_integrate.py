"""Fixed-step explicit Runge-Kutta integration of batched fields (numpy callables or torch modules).

One step of a tableau ``(A, b, c)`` of ``s`` stages, written once for both array kinds:

    k_i = f(t + c_i h, x + h sum_{j<i} A_ij k_j),   x <- x + h sum_i b_i k_i,

with zero coefficients skipped (so ``"rk4_38"`` evaluates the same sums as
torchdiffeq's fixed-grid ``"rk4"``, up to the order of additions). The step is
``h = (t1 - t0) / n_steps`` and the grid ``t0 + k h``.

A torch module is called as ``module(t, x)`` (torchdiffeq's convention) on a tensor of
the module's floating dtype, on its parameters' device, under ``torch.no_grad()``; torch is imported only when a
torch module is given.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InputTypeError, NonFiniteError, ParameterError, ShapeError
from ._tableau import Tableau, get_tableau

__all__ = ["integrate"]


def _is_torch_module(field) -> bool:
    torch = sys.modules.get("torch")  # a torch module can only exist if torch is already imported
    return torch is not None and isinstance(field, torch.nn.Module)


def _torch_dtype(module, fallback):
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    import torch

    return torch.float32 if fallback == np.float32 else torch.float64


def _torch_device(module):
    for p in module.parameters():
        return p.device
    return None  # no parameters: the CPU


def _rk_final(f, x, t0: float, h: float, n_steps: int, tab: Tableau, tvalue):
    """Advance ``x`` by ``n_steps`` steps of ``tab``; ``tvalue`` turns a float time into f's time type."""
    A, b, c = tab.A.tolist(), tab.b.tolist(), tab.c.tolist()
    s = len(b)
    for k in range(n_steps):
        t = t0 + k * h
        ks = []
        for i in range(s):
            inc = None
            for j in range(i):
                if A[i][j] != 0.0:
                    term = A[i][j] * ks[j]
                    inc = term if inc is None else inc + term
            xi = x if inc is None else x + h * inc
            ks.append(f(tvalue(t + c[i] * h), xi))
        # invariant: x holds the numerical solution at t0 + (k + 1) h after this update
        inc = None
        for i in range(s):
            if b[i] != 0.0:
                term = b[i] * ks[i]
                inc = term if inc is None else inc + term
        x = x + h * inc
    return x


def _sweep_chunk(field, x, t0: float, t1: float, steps, tableaux):
    """Final states for every (tableau, n_steps) on one batch chunk: dict (name, n) -> ndarray."""
    out = {}
    if _is_torch_module(field):
        import torch

        dtype, device = _torch_dtype(field, x.dtype), _torch_device(field)
        xt = torch.as_tensor(np.ascontiguousarray(x)).to(device=device, dtype=dtype)

        def tval(t):
            return torch.tensor(t, dtype=dtype, device=device)

        with torch.no_grad():
            for tab in tableaux:
                for n in steps:
                    h = (t1 - t0) / n
                    out[tab.name, n] = _rk_final(field, xt, t0, h, n, tab, tval).cpu().numpy()
        return out
    for tab in tableaux:
        for n in steps:
            h = (t1 - t0) / n
            out[tab.name, n] = np.asarray(_rk_final(field, x, t0, h, n, tab, float))
    return out


def _as_batch(x0, name="x0"):
    """(batch, dim) float array from one state (dim,) or a batch; a copy is never needed (never written)."""
    x = np.asarray(x0)
    if x.dtype.kind not in "fiub":
        raise InputTypeError(f"{name} must be a real numeric array; received dtype {x.dtype}; pass floats")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[None, :]
    elif x.ndim != 2:
        raise ShapeError(f"{name} must be one state of shape (dim,) or a batch of shape (batch, dim); received "
                         f"shape {np.shape(x0)}; flatten each state to a vector")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"{name} must hold at least one state of dimension >= 1; received shape {x.shape}")
    if not np.isfinite(x).all():
        raise NonFiniteError(f"{name} holds NaN or Inf; received {int((~np.isfinite(x)).sum())} non-finite "
                             "entries; pass finite initial conditions")
    return x


def _check_times(t0, t1):
    try:
        t0f, t1f = float(t0), float(t1)
    except (TypeError, ValueError):
        raise ParameterError(f"t0 and t1 must be real numbers; received t0={t0!r}, t1={t1!r}") from None
    if not (np.isfinite(t0f) and np.isfinite(t1f)) or t0f == t1f:
        raise ParameterError(f"t0 and t1 must be finite and distinct; received t0={t0!r}, t1={t1!r}; pass the "
                             "start and end times of the trajectory")
    return t0f, t1f


def _check_steps(n, name="n_steps"):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"{name} must be a positive integer; received {n!r}")
    return int(n)


def _check_field(field, x, t0):
    """Evaluate the field once on the first state: a callable returning (batch, dim)."""
    if not callable(field):
        raise InputTypeError(f"field must be a callable f(t, x) or a torch module; received "
                             f"{type(field).__name__}")
    probe = x[:1]
    if _is_torch_module(field):
        import torch

        dtype, device = _torch_dtype(field, x.dtype), _torch_device(field)
        # the probe must not move the caller's random state (fields with dropout or noise)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            y = field(torch.tensor(t0, dtype=dtype, device=device),
                      torch.as_tensor(np.ascontiguousarray(probe)).to(device=device, dtype=dtype))
        shape = tuple(y.shape)
    else:
        shape = np.shape(field(t0, probe))
    if shape != probe.shape:
        raise ShapeError(f"field(t, x) must return an array of the shape of x, (batch, dim) = {probe.shape}; "
                         f"received shape {shape}; write the field for a batch of states, one per row")


def integrate(field, x0, t1, *, t0=0.0, n_steps: int, method="rk4"):
    """Integrate ``dx/dt = field(t, x)`` from ``t0`` to ``t1`` with a fixed-step explicit RK method.

    Parameters
    ----------
    field : callable or torch.nn.Module
        ``field(t, x)`` for a batch ``x`` of shape (batch, dim), returning the same shape.
        A torch module is called with tensors of its parameters' dtype, without gradients.
    x0 : array_like, shape (dim,) or (batch, dim)
        Initial condition(s); not modified.
    t1 : float
        End time.
    t0 : float, default 0.0
        Start time.
    n_steps : int
        Number of equal steps, ``h = (t1 - t0) / n_steps``.
    method : str or Tableau, default "rk4"
        ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (classical), ``"rk4_38"`` (3/8 rule,
        torchdiffeq's fixed-grid ``"rk4"``) or a :class:`Tableau`.

    Returns
    -------
    ndarray
        The state at ``t1``, shaped like ``x0``; float32 stays float32 for numpy fields, a
        torch module's result has its parameters' dtype.

    Raises
    ------
    ShapeError, InputTypeError, NonFiniteError, ParameterError
        Bad ``x0``, a field that does not return its input's shape, bad times or ``n_steps``.

    Notes
    -----
    Cost: ``n_steps * s`` field evaluations on the whole batch (``s`` stages).

    Examples
    --------
    >>> import numpy as np
    >>> from distsketch.sciml import integrate
    >>> x = integrate(lambda t, x: -x, np.ones(2), 1.0, n_steps=64, method="rk4")
    >>> bool(np.allclose(x, np.exp(-1.0), atol=1e-8))
    True
    """
    tab = get_tableau(method)
    n = _check_steps(n_steps)
    t0f, t1f = _check_times(t0, t1)
    x = _as_batch(x0)
    _check_field(field, x, t0f)
    out = _sweep_chunk(field, x, t0f, t1f, (n,), (tab,))[tab.name, n]
    return out.reshape(np.shape(x0))

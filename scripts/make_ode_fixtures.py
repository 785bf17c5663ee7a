"""Write tests/data/ode_torchdiffeq.npz: torchdiffeq's fixed-grid solutions of a small fixed field.

Run with the reference venv (torch + torchdiffeq), never needed by the tests themselves:

    /work/main/bench-envs/torchref/bin/python scripts/make_ode_fixtures.py

The field is a time-dependent tanh MLP, f(t, x) = tanh(x W1^T + b1 + t w) W2^T + b2, with
weights drawn here from a fixed seed and stored in the file. For each torchdiffeq method
("euler", "midpoint", "rk4" (the 3/8 rule), "heun2") and each step count, odeint is run on the
grid linspace(t0, t1, n + 1) and the state at t1 stored as "<method>_<n>".
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchdiffeq

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "ode_torchdiffeq.npz")


def main():
    rng = np.random.default_rng(20261201)
    dim, hidden, batch = 3, 8, 5
    w = {"W1": rng.standard_normal((hidden, dim)), "b1": rng.standard_normal(hidden),
         "wt": rng.standard_normal(hidden), "W2": rng.standard_normal((dim, hidden)) / np.sqrt(hidden),
         "b2": rng.standard_normal(dim)}
    x0 = rng.standard_normal((batch, dim))
    t0, t1 = 0.3, 1.7
    tw = {k: torch.tensor(v) for k, v in w.items()}

    def f(t, x):
        return torch.tanh(x @ tw["W1"].T + tw["b1"] + t * tw["wt"]) @ tw["W2"].T + tw["b2"]

    out = dict(w, x0=x0, t0=t0, t1=t1, steps=np.array([1, 3, 7, 16]),
               torch=torch.__version__, torchdiffeq=torchdiffeq.__version__)
    with torch.no_grad():
        for method in ("euler", "midpoint", "rk4", "heun2"):
            for n in out["steps"]:
                grid = torch.linspace(t0, t1, int(n) + 1, dtype=torch.float64)
                sol = torchdiffeq.odeint(f, torch.tensor(x0), grid, method=method)
                out[f"{method}_{n}"] = sol[-1].numpy()
    np.savez(OUT, **out)
    print("wrote", os.path.abspath(OUT), "torch", torch.__version__, "torchdiffeq", torchdiffeq.__version__)


if __name__ == "__main__":
    main()

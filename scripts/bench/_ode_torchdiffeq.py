"""Child of scripts/bench/ode.py, run with the reference venv (torch + torchdiffeq).

    python _ode_torchdiffeq.py IN.npz OUT.npz REPEATS THREADS

IN holds the MLP weights, x0, t1, the step counts and the torchdiffeq method names; OUT receives
the seconds of each repeat of the whole sweep (one odeint call per method and step count, on the
grid linspace(0, t1, n + 1), the whole batch at once) and the final states of the last repeat.
"""

import sys
import time

import numpy as np
import torch
import torchdiffeq


def main():
    src, dst, repeats, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    d = np.load(src)
    Ws = [torch.tensor(d[f"W{i}"]) for i in range(3)]
    bs = [torch.tensor(d[f"b{i}"]) for i in range(3)]

    def f(t, x):
        h = torch.tanh(x @ Ws[0] + bs[0])
        h = torch.tanh(h @ Ws[1] + bs[1])
        return h @ Ws[2] + bs[2]

    x0 = torch.tensor(d["x0"])
    t1 = float(d["t1"])
    methods = [str(m) for m in d["methods"]]
    steps = [int(n) for n in d["steps"]]
    seconds, finals = [], {}
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            for m in methods:
                for n in steps:
                    grid = torch.linspace(0.0, t1, n + 1, dtype=torch.float64)
                    finals[f"{m}_{n}"] = torchdiffeq.odeint(f, x0, grid, method=m)[-1]
            seconds.append(time.perf_counter() - t)
    np.savez(dst, seconds=np.array(seconds), torch=torch.__version__, torchdiffeq=torchdiffeq.__version__,
             **{k: v.numpy() for k, v in finals.items()})


if __name__ == "__main__":
    main()

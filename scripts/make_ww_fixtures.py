"""Make the WeightWatcher 0.7.7 reference fixtures used by tests/test_spectral_*.py (loaded by tests/_spectral_ww.py).

Run once, in an environment of its own (torch and weightwatcher are not test dependencies):

    python3 -m venv /tmp/ww && /tmp/ww/bin/pip install torch==2.13.0 weightwatcher==0.7.7 safetensors
    /tmp/ww/bin/python scripts/make_ww_fixtures.py tests/data/ww

For each test model it writes, under the output folder:
  <model>.safetensors       the weights (float32), so tests need no torch;
  <model>.modules.json      the module tree: [longname, class name, has weight] for every
                            entry of ``named_modules()``, in order (what WeightWatcher walks);
  <model>.<case>.csv        WeightWatcher's ``analyze`` details for each option set in CASES,
                            on the nn.Module, and ``statedict.csv`` on the plain state dict;
  versions.json             the torch / weightwatcher / numpy versions used.
  cases.json                the option sets (CASES) the CSVs were made with.
Weights are seeded, with planted heavy tails and spikes so the fits are not degenerate.
"""

import json
import logging
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import weightwatcher as ww

logging.getLogger("weightwatcher").setLevel(logging.ERROR)


class Conv1D(torch.nn.Module):
    """GPT-2 style Conv1D: a dense layer whose weight is stored (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(nx, nf))
        self.bias = torch.nn.Parameter(torch.zeros(nf))


def heavy_tailed_(w, gen, dof):
    t = torch.distributions.StudentT(dof).sample(w.shape) if dof else torch.randn(w.shape, generator=gen)
    with torch.no_grad():
        w.copy_(t / np.sqrt(w.shape[-1]))


def plant_spikes_(w, gen, k, scale):
    m = w.reshape(w.shape[0], -1)
    u = torch.randn(m.shape[0], k, generator=gen)
    v = torch.randn(k, m.shape[1], generator=gen)
    with torch.no_grad():
        m.add_(scale * (u @ v) / np.sqrt(m.shape[0] * m.shape[1]) * np.sqrt(m.shape[0]))


def mixed_model(seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = torch.nn.Module()
    m.embed = torch.nn.Embedding(400, 48)
    m.block = torch.nn.Module()
    m.block.fc1 = torch.nn.Linear(48, 160)
    m.block.norm = torch.nn.LayerNorm(160)
    m.block.fc2 = torch.nn.Linear(160, 48, bias=False)
    m.block.attn = Conv1D(144, 48)
    m.conv = torch.nn.Conv2d(16, 40, 3)
    m.conv_even = torch.nn.Conv2d(24, 12, 2)
    m.small = torch.nn.Linear(24, 14)        # 14 eigenvalues: WeightWatcher's small-sample fit
    m.tiny = torch.nn.Linear(6, 6)           # 6 < min_evals: skipped
    m.conv1d = torch.nn.Conv1d(8, 12, 3)     # 3-D weight
    m.head = torch.nn.Linear(48, 300)
    for i, (name, p) in enumerate(m.named_parameters()):
        if name.endswith("weight") and p.dim() >= 2:
            heavy_tailed_(p, gen, dof=[0, 2.5, 3.5][i % 3])
            if p.shape[0] > 20:
                plant_spikes_(p, gen, k=3, scale=4.0)
    return m


def trap_model(seed):
    """Two dense layers, one with a planted correlation trap (a single huge entry)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(200, 300), torch.nn.Linear(300, 200))
    for p in m.parameters():
        if p.dim() == 2:
            heavy_tailed_(p, gen, dof=0)
    with torch.no_grad():
        m[1].weight[7, 11] = 40.0
    return m


MODELS = {"mixed": lambda: mixed_model(3), "traps": lambda: trap_model(5)}
CASES = {
    "default": {},
    "mp_fit": {"mp_fit": True},
    "detX": {"detX": True},
    "clip_xmax": {"fix_fingers": "clip_xmax"},
    "xmax_int": {"xmax": -2},
    "limits": {"min_evals": 20, "max_evals": 100, "max_N": 250},
    "layers": {"layers": [2, 9]},
    "randomize": {"randomize": True, "mp_fit": True},
}


def modules_manifest(model):
    return [[name, type(mod).__name__, isinstance(getattr(mod, "weight", None), torch.Tensor)]
            for name, mod in model.named_modules()]


def main(out):
    os.makedirs(out, exist_ok=True)
    for mname, make in MODELS.items():
        model = make()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out, f"{mname}.safetensors"))
        with open(os.path.join(out, f"{mname}.modules.json"), "w") as f:
            json.dump(modules_manifest(model), f, indent=0)
        for case, kw in CASES.items():
            np.random.seed(0)
            df = ww.WeightWatcher(model=model).analyze(**kw)
            df.to_csv(os.path.join(out, f"{mname}.{case}.csv"), index=False, float_format="%.17g")
            print(mname, case, len(df), "layers")
        df = ww.WeightWatcher(model={k: v.clone() for k, v in state.items()}).analyze()
        df.to_csv(os.path.join(out, f"{mname}.statedict.csv"), index=False, float_format="%.17g")
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=1)
    with open(os.path.join(out, "versions.json"), "w") as f:
        json.dump({"torch": torch.__version__, "weightwatcher": ww.__version__, "numpy": np.__version__}, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/ww")

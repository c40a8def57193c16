"""Small test problems shared by the ODE tests, and the fresh-interpreter check of upstream."""
import functools
from pathlib import Path

import torch
import torch.nn as nn

from torchdiffeq_localreg._ode_solvers import ADAPTIVE_METHODS, FIXED_GRID_METHODS

ALL_METHODS = ADAPTIVE_METHODS + FIXED_GRID_METHODS
LOCAL_STRATEGIES = ("unbiased", "biased")


class MLPField(nn.Module):
    """A small time-dependent neural vector field, dy/dt = W2 tanh(W1 y + t b) (nonautonomous)."""

    def __init__(self, dim=3, hidden=8, dtype=torch.float64, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(dim, hidden).to(dtype)
        self.l2 = nn.Linear(hidden, dim).to(dtype)
        self.tb = nn.Parameter(torch.randn(hidden, generator=gen, dtype=dtype) * 0.3)
        with torch.no_grad():
            for p in (self.l1.weight, self.l1.bias, self.l2.weight, self.l2.bias):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.7)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y) + t * self.tb))


class TupleField(nn.Module):
    """The same field on a tuple state (y, z): dy/dt = f(y), dz/dt = -z * mean(y^2)."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.f = MLPField(dtype=dtype)

    def forward(self, t, state):
        y, z = state
        return self.f(t, y), -z * (y ** 2).mean()


class Linear(nn.Module):
    """dy/dt = A y with a learnable matrix A."""

    def __init__(self, matrix):
        super().__init__()
        self.A = nn.Parameter(matrix.clone())

    def forward(self, t, y):
        return y @ self.A.T


class SmallSDE(nn.Module):
    """A diagonal Ito SDE on 2 channels: drift tanh(W y + b), diffusion 0.1 * sigmoid(V y + c)."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.drift = nn.Linear(2, 2).to(dtype)
        self.diffusion = nn.Linear(2, 2).to(dtype)

    def f(self, t, y):
        return torch.tanh(self.drift(y))

    def g(self, t, y):
        return 0.1 * torch.sigmoid(self.diffusion(y))


def brownian(batch=3, entropy=5):
    """A Brownian motion on [0, 1] for :class:`SmallSDE`, the same path for the same entropy."""
    import torchsde

    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch, 2), dtype=torch.float64, entropy=entropy)


def options_for(method, step_size=0.05):
    """Fixed-grid methods need a grid; adaptive ones run with their defaults."""
    return {"step_size": step_size} if method in FIXED_GRID_METHODS else None


LOW_ORDER_TOLERANCES = {"adaptive_heun": (1e-3, 1e-5), "fehlberg2": (1e-4, 1e-6), "bosh3": (1e-4, 1e-6)}


def tolerances(method):
    """Loose enough that low-order adaptive methods take few steps (tens, with some rejected; at
    1e-7 bosh3 takes 160 and adaptive_heun's adjoint backward thousands), tight for the others."""
    rtol, atol = LOW_ORDER_TOLERANCES.get(method, (1e-7, 1e-9))
    return {"rtol": rtol, "atol": atol}


def state(dtype=torch.float64, batch=4, dim=3, seed=1):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class _Run(torch.nn.Module):
    """Runs ``fn()`` inside ``forward`` so that ``functional_call`` substitutes ``func``'s parameters
    for everything ``fn`` does."""

    def __init__(self, func, fn):
        super().__init__()
        self.func, self.fn = func, fn

    def forward(self):
        return self.fn()


def as_function_of_params(func, fn):
    """``fn``'s result as a function of ``func``'s parameters, for gradcheck."""
    runner = _Run(func, fn)
    names = ["func." + n for n, _ in func.named_parameters()]
    return lambda *ps: torch.func.functional_call(runner, dict(zip(names, ps)), ())


def import_isolated(folder, names):
    """Imports the modules ``names`` with ``folder`` first on ``sys.path`` and returns them by name.

    The script folders' helper modules are imported with a clean slate, and every other test gets
    its own modules (and ``sys.path``) back, so tests of different folders do not see each other's.
    """
    import importlib
    import sys

    saved_modules = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    saved_path = list(sys.path)
    sys.path.insert(0, str(folder))
    try:
        return {n: importlib.import_module(n) for n in names}
    finally:
        sys.path[:] = saved_path
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved_modules)


def write_random_mnist(root, mnist_data, n_train=64, n_test=32, seed=0):
    """Random 28x28 digits with labels 0-9 as torchvision's four raw IDX files under ``root/MNIST/raw``
    (``mnist_data`` is the examples' data module); returns ``root`` as a string."""
    import os

    import numpy as np

    raw = os.path.join(str(root), "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    rng = np.random.default_rng(seed)
    for train, n in ((True, n_train), (False, n_test)):
        image_file, label_file = mnist_data.RAW_FILES[train]
        mnist_data._write_idx(os.path.join(raw, image_file), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        mnist_data._write_idx(os.path.join(raw, label_file), rng.integers(0, 10, n, dtype=np.uint8))
    return str(root)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_examples = {}


def load_example(name):
    """Imports ``examples/<name>.py`` by path (once), with ``examples/`` on sys.path for its helpers."""
    import importlib.util
    import sys

    if name not in _examples:
        if str(EXAMPLES) not in sys.path:
            sys.path.insert(0, str(EXAMPLES))
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _examples[name] = module
    return _examples[name]


def read_csv(path):
    """(header, rows with float values) of a CSV log."""
    import csv

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, [{k: float(v) for k, v in row.items()} for row in reader]


# What importing and using the package does to torchdiffeq and torchsde, seen from a fresh interpreter
# (in this one the package is imported already). One interpreter answers for both upstreams: each
# start costs an import of torch. The torchdiffeq part raises on the first difference; its
# traceback (or "OK") is reported. The torchsde part lists every (module, attribute[, member]) of
# torchsde whose object changed after the import or after a use of both entry points.
UPSTREAM_IMPORT_CHECK = r"""
import importlib, json, sys, traceback
import torch, torchdiffeq, torchsde
assert not any(n.split(".")[0] == "torchdiffeq_localreg" for n in sys.modules)
odeint_module = importlib.import_module("torchdiffeq._impl.odeint")
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
y0 = torch.randn(4, 3, dtype=torch.float64)

def solve():
    out = []
    for m, o in [("dopri5", None), ("bosh3", None), ("rk4", {"step_size": 0.1})]:
        t = torch.linspace(0, 1, 4, dtype=torch.float64)
        out.append(torchdiffeq.odeint(lambda t, y: net(y), y0, t, method=m, options=o))
    return out

def fingerprint():
    seen = {}
    for name, module in sorted(sys.modules.items()):
        if name.startswith("torchsde"):
            for attr, value in sorted(vars(module).items()):
                seen[(name, attr)] = id(value)
                if isinstance(value, type):
                    for key, member in vars(value).items():
                        seen[(name, attr, key)] = id(member)
    return seen

before_solvers = dict(odeint_module.SOLVERS)
before_fns = (torchdiffeq.odeint, torchdiffeq.odeint_adjoint, odeint_module._check_inputs)
before = solve()
before_sde = fingerprint()
import torchdiffeq_localreg
after_import_sde = fingerprint()
report = {}
try:
    after = solve()
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert (torchdiffeq.odeint, torchdiffeq.odeint_adjoint, odeint_module._check_inputs) == before_fns
    for name, cls in before_solvers.items():
        assert odeint_module.SOLVERS[name] is cls, name
    assert set(odeint_module.SOLVERS) == set(before_solvers), set(odeint_module.SOLVERS) - set(before_solvers)
    report["torchdiffeq"] = "OK"
except Exception:
    report["torchdiffeq"] = traceback.format_exc()

from torchdiffeq_localreg import sdeint_adjoint_reg, sdeint_reg
sde = torch.nn.Linear(2, 2)
sde.noise_type, sde.sde_type = "diagonal", "ito"
sde.f = lambda t, y: sde(y)
sde.g = lambda t, y: 0.1 * torch.sigmoid(y)
ys, reg = sdeint_reg(sde, torch.ones(2, 2), [0.0, 0.5], dt=0.1, adaptive=True)
ys, reg = sdeint_adjoint_reg(sde, torch.ones(2, 2), [0.0, 0.5], dt=0.1, method="euler")
(ys.sum() + reg).backward()
after_use_sde = fingerprint()
modules = {key[0] for key in before_sde}
report["torchsde_changed"] = sorted(
    {repr(key) for after in (after_import_sde, after_use_sde) for key in set(before_sde) | set(after)
     if key[0] in modules and key[1] != "__warningregistry__" and before_sde.get(key) != after.get(key)})
print("REPORT", json.dumps(report))
"""
@functools.lru_cache(maxsize=None)
def upstream_after_import():
    """The report of ``UPSTREAM_IMPORT_CHECK`` (a dict), run once per test session."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", UPSTREAM_IMPORT_CHECK], cwd=str(Path(__file__).parent),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.split("REPORT", 1)[1])

"""Every available device: the CPU always, CUDA where torch sees it (no GPU, no CUDA cases: nothing
is skipped, the list is shorter).

On each device the wrappers' solutions and gradients stay bit-identical to upstream's, ``reg``
lives on the state's device and agrees with the CPU's value, ``AutoWeight`` gives the same update
as on the CPU, and ``nn.DataParallel`` works: directly (one device: DataParallel calls the model
in this thread) and through torch's own ``replicate`` and ``parallel_apply`` (replicas in threads
of their own, which is what several GPUs do; with one GPU both replicas share it). DDP on CUDA
(NCCL) is in ``test_ddp.py``.
"""
import pytest
import torch
import torch.nn as nn
import torchdiffeq
import torchsde

import torchdiffeq_localreg as localreg
from problems import MLPField, SmallSDE, as_function_of_params, state

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# DataParallel wants the module on its first GPU where there is one; without, it calls the module.
DATAPARALLEL_DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
D = torch.float64
T = torch.tensor([0.0, 0.5, 1.0], dtype=D)


def _on(device):
    return MLPField().to(device), state().to(device), T.to(device)


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_ode_solution_and_gradients_bit_identical_to_upstream(device, method, adjoint):
    func, y0, t = _on(device)
    y0.requires_grad_(True)
    kwargs = dict(method=method, rtol=1e-7, atol=1e-9, options={"step_size": 0.05} if method == "rk4" else None)
    inputs = (y0, *func.parameters())
    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    ours = localreg.odeint_adjoint_reg if adjoint else localreg.odeint_reg
    expected = upstream(func, y0, t, **kwargs)
    expected_grads = _grads(expected.square().sum(), inputs)
    ys, reg = ours(func, y0, t, strategy="unbiased", generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(ys, expected)
    for a, b in zip(_grads(ys.square().sum(), inputs), expected_grads):
        assert torch.equal(a, b)
    assert reg.device == y0.device and torch.isfinite(reg) and reg > 0
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(reg, tuple(func.parameters())))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strategy", ["unbiased", "biased", "global"])
def test_reg_agrees_with_the_cpu(device, strategy):
    """The same solve and the same sampled step on the CPU and on ``device`` (float64)."""
    values = []
    for where in ("cpu", device):
        func, y0, t = _on(where)
        _, reg = localreg.odeint_reg(func, y0, t, strategy=strategy, stiffness_weight=0.5, rtol=1e-7, atol=1e-9,
                                     generator=torch.Generator().manual_seed(4))
        values.append(reg.item())
    assert values[1] == pytest.approx(values[0], rel=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_of_reg(device):
    """One accepted step, so that reg is a smooth function of the parameters (as in test_gradients)."""
    func = MLPField(dim=2, hidden=3).to(device)
    y0, t = state(batch=1, dim=2).to(device), torch.tensor([0.0, 0.2], dtype=D, device=device)
    params = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())

    def run():
        return localreg.odeint_reg(func, y0, t, strategy="biased", stiffness_weight=0.3, rtol=1e-2, atol=1e-2,
                                   options={"first_step": 0.2})[1]

    assert torch.autograd.gradcheck(as_function_of_params(func, run), params, eps=1e-4, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_one_import_block_collects_reg_on_the_device(device):
    func, y0, t = _on(device)
    with localreg.regularize(generator=torch.Generator().manual_seed(0)) as r:
        ys = localreg.odeint(func, y0, t, rtol=1e-7, atol=1e-9)
    assert torch.equal(ys, torchdiffeq.odeint(func, y0, t, rtol=1e-7, atol=1e-9))
    assert r.reg.device == y0.device and r.reg > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_sde_outputs_bit_identical_to_torchsde(device, adjoint):
    sde = SmallSDE().to(device)
    y0 = torch.full((3, 2), 0.1, dtype=D, device=device)
    ts = T.to(device)
    common = dict(method="milstein", dt=0.05, adaptive=True, rtol=1e-3, atol=1e-3)

    def bm():
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 2), dtype=D, device=device, entropy=5)

    upstream = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint
    ours = localreg.sdeint_adjoint_reg if adjoint else localreg.sdeint_reg
    expected = upstream(sde, y0, ts, bm=bm(), **common)
    ys, reg = ours(sde, y0, ts, bm=bm(), strategy="unbiased", generator=torch.Generator().manual_seed(0), **common)
    assert torch.equal(ys, expected)
    assert reg.device == y0.device and torch.isfinite(reg) and reg > 0


def _auto_steps(auto, func, y0, t, steps):
    """``steps`` training steps under ``auto``; returns its weights and the gradients (on the CPU)."""
    params = list(func.parameters())
    weights, grads = [], []
    for step in steps:
        ys, reg = localreg.odeint_reg(func, y0, t, rtol=1e-7, atol=1e-9, generator=torch.Generator().manual_seed(step))
        for p in params:
            p.grad = None
        auto.backward((ys[-1] - 0.5).square().mean(), reg, params)
        weights.append(auto.weight)
        grads.append([p.grad.cpu() for p in params])
        with torch.no_grad():
            for p in params:
                p -= 0.05 * p.grad
    return weights, grads


def _assert_close_lists(a, b):
    """Float64 on two devices: the same up to the order of the reductions (a few 1e-11 on an H200)."""
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            torch.testing.assert_close(v, u, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_weight_gives_the_cpus_update_and_resumes_on_the_cpu(device, tmp_path):
    """Three steps of AutoWeight on ``device`` and on the CPU give the same weights and gradients.
    Its state, saved on ``device`` and loaded on the CPU (``map_location``), continues as the run on
    ``device`` does."""
    runs = {}
    for where in ("cpu", device):
        func, y0, t = _on(where)
        auto = localreg.AutoWeight()
        runs[where] = _auto_steps(auto, func, y0, t, range(3)), auto, func
    (w_cpu, g_cpu), _, _ = runs["cpu"]
    (w_dev, g_dev), auto, func = runs[device]
    assert w_dev == pytest.approx(w_cpu, rel=1e-7)
    _assert_close_lists(g_cpu, g_dev)

    torch.save({"auto": auto.state_dict(), "func": func.state_dict()}, tmp_path / "checkpoint.pt")
    saved = torch.load(tmp_path / "checkpoint.pt", map_location="cpu")
    resumed, resumed_func = localreg.AutoWeight(), MLPField()
    resumed.load_state_dict(saved["auto"])
    resumed_func.load_state_dict(saved["func"])
    expected = _auto_steps(auto, func, state().to(device), T.to(device), [3, 4])
    got = _auto_steps(resumed, resumed_func, state(), T, [3, 4])
    assert got[0] == pytest.approx(expected[0], rel=1e-7)
    _assert_close_lists(expected[1], got[1])


class _Net(nn.Module):
    """An ODE block that returns ``(prediction, reg)``, as DataParallel needs (it gathers outputs)."""

    def __init__(self, adjoint):
        super().__init__()
        self.func, self.adjoint = MLPField(), adjoint

    def forward(self, y0):
        solve = localreg.odeint_adjoint_reg if self.adjoint else localreg.odeint_reg
        ys, reg = solve(self.func, y0, T.to(y0.device), rtol=1e-7, atol=1e-9)
        return ys[-1], reg.reshape(1)


@pytest.mark.parametrize("device", DATAPARALLEL_DEVICES)
@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_dataparallel_returns_reg_and_upstreams_gradients(device, adjoint):
    net = _Net(adjoint).to(device)
    y0 = state().to(device)
    params = tuple(net.parameters())
    out, reg = nn.DataParallel(net)(y0)
    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    expected = upstream(net.func, y0, T.to(device), rtol=1e-7, atol=1e-9)[-1]
    assert torch.equal(out, expected)
    for a, b in zip(_grads(out.square().sum(), params), _grads(expected.square().sum(), params)):
        assert torch.equal(a, b)
    assert reg.device == y0.device and all(g.abs().sum() > 0 for g in _grads(reg.sum(), params))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's parallel_apply needs an accelerator")
@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_replicas_in_torchs_threads_on_cuda(adjoint):
    """What DataParallel does on several GPUs, on the GPU there is: torch's replicate (two replicas,
    as broadcast makes them), parallel_apply (one thread per replica, on the device's streams) and
    gather. Each replica returns its own reg; the gradients are upstream's."""
    net = _Net(adjoint).cuda()
    params = tuple(net.parameters())
    chunks = [state(seed=1).cuda(), state(seed=2).cuda()]
    replicas = [nn.parallel.replicate(net, [0])[0] for _ in chunks]
    outputs = nn.parallel.parallel_apply(replicas, [(c,) for c in chunks], devices=[0, 0])
    out, reg = nn.parallel.gather(outputs, 0)
    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    expected = torch.cat([upstream(net.func, c, T.cuda(), rtol=1e-7, atol=1e-9)[-1] for c in chunks])
    assert torch.equal(out, expected) and reg.shape == (2,)
    for a, b in zip(_grads(out.square().sum(), params), _grads(expected.square().sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(g.abs().sum() > 0 for g in _grads(reg.mean(), params))


class _OneImportNet(nn.Module):
    """An ODE block in the one-import style: a ``regularize()`` block inside ``forward``."""

    def __init__(self):
        super().__init__()
        self.func = MLPField()

    def forward(self, y0):
        with localreg.regularize() as r:
            ys = localreg.odeint(self.func, y0, T.to(y0.device), rtol=1e-7, atol=1e-9)
        return ys[-1], r.reg.reshape(1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nn.DataParallel with two replicas needs CUDA")
@pytest.mark.parametrize("make", [lambda: _Net(False), lambda: _Net(True), _OneImportNet],
                         ids=["odeint_reg", "odeint_adjoint_reg", "one_import"])
def test_dataparallel_with_two_replicas_on_one_gpu(make):
    """nn.DataParallel itself with ``device_ids=[0, 0]``: two replicas broadcast to the one GPU, each
    run in a thread of its own, the batch scattered in two. Each replica returns its reg (gathered
    into a vector, each connected to the weights); the outputs and gradients are upstream's on the
    two halves of the batch."""
    net = make().cuda()
    y0 = state(batch=8).cuda()
    params = tuple(net.parameters())
    out, reg = nn.DataParallel(net, device_ids=[0, 0])(y0)
    upstream = torchdiffeq.odeint_adjoint if getattr(net, "adjoint", False) else torchdiffeq.odeint
    expected = torch.cat([upstream(net.func, c, T.cuda(), rtol=1e-7, atol=1e-9)[-1] for c in y0.chunk(2)])
    assert torch.equal(out, expected) and reg.shape == (2,) and torch.isfinite(reg).all()
    for a, b in zip(_grads(out.square().sum(), params), _grads(expected.square().sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(reg.mean(), params))



@pytest.mark.parametrize("device", DEVICES)
def test_auto_weight_saved_on_the_cpu_continues_on_the_device(device):
    """The other direction: a state saved on the CPU and loaded as it is moves its moving average to
    the device of the gradients at the next step (as an optimizer's state moves to its parameters)."""
    func, y0, t = _on("cpu")
    auto = localreg.AutoWeight()
    _auto_steps(auto, func, y0, t, range(2))
    resumed, moved = localreg.AutoWeight(), MLPField().to(device)
    resumed.load_state_dict(auto.state_dict())
    moved.load_state_dict(func.state_dict())
    expected = _auto_steps(auto, func, y0, t, [2, 3])
    got = _auto_steps(resumed, moved, y0.to(device), t.to(device), [2, 3])
    assert got[0] == pytest.approx(expected[0], rel=1e-7)
    _assert_close_lists(expected[1], got[1])
    assert all(m.device == moved.l1.weight.device for m in resumed.state_dict()["momentum"] if m is not None)

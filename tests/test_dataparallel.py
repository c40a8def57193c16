"""nn.DataParallel runs ``func`` as a replica whose parameters are plain (non-leaf) tensor attributes.

torch.nn.parallel.replicate needs CUDA to broadcast; :func:`cpu_replica` builds the same replica on
the CPU with torch's own ``_replicate_for_data_parallel`` and sets the parameters as attributes, as
``torch/nn/parallel/replicate.py`` does (a clone stands for the broadcast copy: on one device both
are the identity, in value and in gradient).
"""
import threading

import pytest
import torch
import torch.nn as nn
import torchdiffeq
import torchsde

import torchdiffeq_localreg as localreg
from problems import MLPField, SmallSDE, brownian, state

T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


def cpu_replica(network, tensors=None):
    """A DataParallel replica of ``network`` on the CPU. Its parameters are ``tensors`` (in the order of
    ``network.parameters()``) or, by default, clones of the network's, connected to them."""
    tensors = iter([p.clone() for p in network.parameters()] if tensors is None else tensors)
    modules = list(network.modules())
    copies = {module: module._replicate_for_data_parallel() for module in modules}
    for module in modules:
        replica = copies[module]
        for key, child in module._modules.items():
            setattr(replica, key, None if child is None else copies[child])
        for key, param in module._parameters.items():
            if param is not None:
                setattr(replica, key, next(tensors))   # a plain attribute: the replica has no parameters
    return copies[network]


def test_the_replica_hides_its_parameters_as_dataparallel_does():
    replica = cpu_replica(MLPField())
    assert replica._is_replica and list(replica.parameters()) == []


def _grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def _assert_same(got, expected):
    assert all(g is not None for g in got), "a parameter got no gradient"
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def _ode_solves():
    def reg_solve(strategy):
        return lambda func, y0, t: localreg.odeint_adjoint_reg(func, y0, t, strategy=strategy)[0]

    def one_import(func, y0, t):
        with localreg.regularize() as r:
            y = localreg.odeint_adjoint(func, y0, t)
        assert len(r.stats) == 1
        return y

    return {"unbiased": reg_solve("unbiased"), "biased": reg_solve("biased"), "none": reg_solve("none"),
            "one-import": one_import, "one-import outside": localreg.odeint_adjoint}


@pytest.mark.parametrize("solve", list(_ode_solves()))
def test_odeint_adjoint_gives_the_replicas_weights_upstreams_gradients(solve):
    func, y0 = MLPField(), state()
    params = tuple(func.parameters())
    expected = _grads(torchdiffeq.odeint_adjoint(cpu_replica(func), y0, T).square().sum(), params)
    assert all(g is not None for g in expected)
    y = _ode_solves()[solve](cpu_replica(func), y0, T)
    _assert_same(_grads(y.square().sum(), params), expected)


def test_gradcheck_of_reg_through_a_replica():
    func = MLPField(dim=2, hidden=3)
    y0 = state(batch=1, dim=2)
    t = torch.tensor([0.0, 0.2], dtype=torch.float64)

    def reg(*tensors):
        _, r = localreg.odeint_adjoint_reg(cpu_replica(func, tensors), y0, t, rtol=1e-2, atol=1e-2,
                                           options={"first_step": 0.2}, strategy="biased", stiffness_weight=0.3)
        return r

    params = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())
    assert torch.autograd.gradcheck(reg, params, eps=1e-4, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("solve", ["reg", "one-import"])
def test_sdeint_adjoint_gives_the_replicas_weights_their_gradients(solve):
    """torchsde.sdeint_adjoint itself finds no parameters on a replica (its default is the parameters()
    of the module it wraps around the SDE): with it the weights get no gradient. Ours get the
    gradients of the plain module's adjoint."""
    sde = SmallSDE()
    y0 = torch.full((3, 2), 0.1, dtype=torch.float64, requires_grad=True)
    params = tuple(sde.parameters())
    kwargs = dict(dt=0.1, method="euler")
    expected = _grads(torchsde.sdeint_adjoint(sde, y0, T, bm=brownian(), **kwargs).square().sum(), params)
    upstream_on_replica = torchsde.sdeint_adjoint(cpu_replica(sde), y0, T, bm=brownian(), **kwargs)
    assert all(g is None for g in _grads(upstream_on_replica.square().sum(), params))   # torchsde's own behaviour
    if solve == "reg":
        ys, _ = localreg.sdeint_adjoint_reg(cpu_replica(sde), y0, T, bm=brownian(), strategy="none", **kwargs)
    else:
        with localreg.regularize(strategy="none") as r:
            ys = localreg.sdeint_adjoint(cpu_replica(sde), y0, T, bm=brownian(), **kwargs)
        assert len(r.stats) == 1
    _assert_same(_grads(ys.square().sum(), params), expected)


def test_sde_reg_reaches_a_replicas_weights():
    sde = SmallSDE()
    y0 = torch.full((3, 2), 0.1, dtype=torch.float64)
    ys, reg = localreg.sdeint_adjoint_reg(cpu_replica(sde), y0, T, bm=brownian(), dt=0.1, method="euler")
    reg_grads = torch.autograd.grad(reg, tuple(sde.drift.parameters()), retain_graph=True)
    assert all(g.abs().sum() > 0 for g in reg_grads)
    grads = _grads(ys.square().sum() + reg, tuple(sde.parameters()))
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


class _Net(nn.Module):
    """A model for nn.DataParallel on several GPUs: each replica returns its reg beside its output."""

    def __init__(self):
        super().__init__()
        self.func = MLPField()

    def forward(self, y0):
        ys, reg = localreg.odeint_adjoint_reg(self.func, y0, T)
        return ys[-1], reg


def test_replicas_in_threads_return_their_reg_and_upstreams_gradients():
    """DataParallel runs each replica's forward in a thread of its own (parallel_apply), which starts
    outside any regularize() block; the *_reg functions return reg through forward instead. On the
    CPU the threads are ours (parallel_apply needs CUDA), the replicas torch's."""
    net, chunks = _Net(), (state(seed=1), state(seed=2))
    params = tuple(net.parameters())
    outputs = [None, None]

    def worker(i):
        outputs[i] = cpu_replica(net)(chunks[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert all(reg.requires_grad for _, reg in outputs)
    loss = sum(out.square().sum() for out, _ in outputs)
    expected = _grads(sum(torchdiffeq.odeint_adjoint(cpu_replica(net.func), c, T)[-1].square().sum()
                          for c in chunks), params)
    _assert_same(_grads(loss, params), expected)
    reg = torch.stack([reg for _, reg in outputs]).mean()   # DataParallel gathers the replicas' regs into a vector
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(reg, params))

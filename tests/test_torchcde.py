"""torchcde calls torchdiffeq.odeint / odeint_adjoint by attribute: regularize(intercept=True) reaches it."""
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torchdiffeq

import torchdiffeq_localreg as localreg

torchcde = pytest.importorskip("torchcde")

UPSTREAM_ODEINT = sys.modules["torchdiffeq._impl.odeint"].odeint
UPSTREAM_ODEINT_ADJOINT = sys.modules["torchdiffeq._impl.adjoint"].odeint_adjoint
TOLERANCES = dict(rtol=1e-3, atol=1e-5)


class CDEFunc(nn.Module):
    """The CDE's vector field f(t, z), a (hidden x input channels) matrix for each row."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.channels, self.hidden = channels, hidden
        self.linear1 = nn.Linear(hidden, 16)
        self.linear2 = nn.Linear(16, hidden * channels)

    def forward(self, t, z):
        return torch.tanh(self.linear2(torch.tanh(self.linear1(z)))).view(*z.shape[:-1], self.hidden, self.channels)


class CDEClassifier(nn.Module):
    """torchcde's README model: z0 from the first observation, cdeint over the spline, a linear readout."""

    def __init__(self, channels=3, hidden=4, adjoint=False):
        super().__init__()
        self.func = CDEFunc(channels, hidden)
        self.initial = nn.Linear(channels, hidden)
        self.readout = nn.Linear(hidden, 1)
        self.adjoint = adjoint

    def forward(self, coeffs):
        X = torchcde.CubicSpline(coeffs)
        z0 = self.initial(X.evaluate(X.interval[0]))
        z = torchcde.cdeint(X=X, func=self.func, z0=z0, t=X.interval, adjoint=self.adjoint, **TOLERANCES)
        return self.readout(z[:, 1]).squeeze(-1)


def _data(batch=8, length=6, seed=0):
    """Spirals turning one way (label 1) or the other (label 0), with time as the first channel."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2 * torch.pi, length)
    start = torch.rand(batch, 1, generator=gen) * 2 * torch.pi
    labels = (torch.rand(batch, generator=gen) > 0.5).float()
    sign = (2 * labels - 1).unsqueeze(-1)
    x = torch.stack([t.expand(batch, length), torch.cos(start + sign * t), torch.sin(start + sign * t)], dim=-1)
    return torchcde.hermite_cubic_coefficients_with_backward_differences(x), labels


def _upstream_in_place():
    return torchdiffeq.odeint is UPSTREAM_ODEINT and torchdiffeq.odeint_adjoint is UPSTREAM_ODEINT_ADJOINT


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_cdeint_classifier_trains_with_the_regularization(adjoint):
    torch.manual_seed(0)
    model = CDEClassifier(adjoint=adjoint)
    coeffs, labels = _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.func.parameters()]
    for _ in range(2):
        with localreg.regularize(intercept=True) as r:
            logits = model(coeffs)
        assert len(r.stats) == 1 and r.stats[0].nfe_reg > 0 and r.reg.requires_grad
        assert _upstream_in_place()
        reg_grads = torch.autograd.grad(r.reg, tuple(model.func.parameters()), retain_graph=True)
        assert all(torch.isfinite(g).all() for g in reg_grads) and any(g.abs().sum() > 0 for g in reg_grads)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels) + 0.1 * r.reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if adjoint:
        assert r.stats[0].nfe_backward > 0   # the adjoint's backward solve ran through our counter
    assert all(not torch.equal(a, b) for a, b in zip(before, model.func.parameters()))


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_cdeint_solution_is_plain_cdeint(adjoint):
    model = CDEClassifier(adjoint=adjoint)
    coeffs, _ = _data()
    expected = model(coeffs)
    with localreg.regularize(intercept=True) as r:
        inside = model(coeffs)
    with localreg.intercept():
        routed_plain = model(coeffs)
    after = model(coeffs)
    assert len(r.stats) == 1
    for got in (inside, routed_plain, after):
        assert torch.equal(got, expected)


def test_without_intercept_the_block_sees_nothing_and_says_so():
    model = CDEClassifier()
    coeffs, _ = _data()
    with pytest.warns(UserWarning, match=r"intercept=True") as caught:
        with localreg.regularize() as r:
            model(coeffs)
    assert r.stats == [] and not r.reg.requires_grad
    assert sum("without seeing a solve" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with localreg.regularize(intercept=True) as r:
            model(coeffs)
    assert len(r.stats) == 1

"""Local regularization of neural ODEs and SDEs for torchdiffeq and torchsde.

Swap ``odeint`` for ``odeint_reg`` (or ``sdeint`` for ``sdeint_reg``), add ``lam * reg`` to the
loss, and the solver takes fewer steps as the model trains. Or keep model code as it is with
``from torchdiffeq_localreg import odeint`` and wrap the forward pass in ``with regularize() as r:``.
See Pal, Edelman, Rackauckas, "Locally Regularized Neural Differential Equations", ICML 2023.
"""
from ._api_ode import odeint_adjoint_reg, odeint_reg
from ._auto_weight import AutoWeight
from ._api_sde import sdeint_adjoint_reg, sdeint_reg
from ._context import intercept, odeint, odeint_adjoint, regularize, sdeint, sdeint_adjoint
from ._events import odeint_event_reg
from ._stats import LocalRegStats
from ._weight_control import NFEBudget

__all__ = ["odeint_reg", "odeint_adjoint_reg", "sdeint_reg", "sdeint_adjoint_reg", "odeint_event_reg", "LocalRegStats",
           "NFEBudget", "AutoWeight", "regularize", "intercept", "odeint", "odeint_adjoint", "sdeint",
           "sdeint_adjoint"]
__version__ = "0.1.0"

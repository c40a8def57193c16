"""The one door to torchdiffeq's and torchsde's internals.

Every private name of torchdiffeq (``torchdiffeq._impl``) and torchsde (``torchsde._core``,
``torchsde.settings``) that this package uses is imported here and nowhere else, together with the
methods our wrapper solvers override or call on upstream's classes. All of it is checked when the
package is imported: if an installed version lacks any of it, the import fails at once with an
ImportError that names what is missing and the versions this package is tested with, instead of
an AttributeError deep inside a training run.

The four solve functions are taken from the modules that define them (``upstream_odeint`` is
``torchdiffeq._impl.odeint.odeint``, and so on), not from the ``torchdiffeq`` / ``torchsde``
attributes: while :func:`~torchdiffeq_localreg.intercept` routes those attributes through this
package, every call this package makes still reaches upstream's own function.
"""
from typing import Dict, Tuple

TESTED_RANGE = "torchdiffeq>=0.2.4,<0.3 and torchsde>=0.2.6,<0.3"


def _versions() -> str:
    found = []
    for name in ("torchdiffeq", "torchsde"):
        try:
            module = __import__(name)
            found.append(f"{name} {getattr(module, '__version__', '(unknown version)')}")
        except ImportError:
            found.append(f"{name} not importable")
        except Exception as error:   # a broken install: say so, the message is what matters here
            found.append(f"{name} failed to import ({type(error).__name__})")
    return ", ".join(found)


def _incompatible(what: str) -> ImportError:
    return ImportError(f"torchdiffeq_localreg needs internals of torchdiffeq and torchsde that the installed "
                       f"versions ({_versions()}) do not have: {what}. It is tested with {TESTED_RANGE}; "
                       f"install versions in that range.")


try:
    from torchdiffeq._impl.adjoint import OdeintAdjointMethod, find_parameters, handle_adjoint_norm_
    from torchdiffeq._impl.adjoint import odeint_adjoint as upstream_odeint_adjoint
    from torchdiffeq._impl.interp import _interp_evaluate
    from torchdiffeq._impl.misc import (_all_adjoint_callback_names, _all_callback_names, _check_inputs,
                                        _compute_error_ratio, _flat_to_shape)
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.odeint import odeint as upstream_odeint
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau, _runge_kutta_step
    from torchdiffeq._impl.solvers import FixedGridODESolver
    from torchsde._core import methods as sde_methods
    from torchsde._core import misc as sde_misc
    from torchsde._core.adaptive_stepping import _rms as sde_rms
    from torchsde._core.adjoint import _SdeintAdjointMethod, _select_default_adjoint_method
    from torchsde._core.adjoint import sdeint_adjoint as upstream_sdeint_adjoint
    from torchsde._core.base_sde import ForwardSDE
    from torchsde._core.base_solver import BaseSDESolver
    from torchsde._core.methods.reversible_heun import ReversibleHeun
    from torchsde._core.sdeint import check_contract, parse_return
    from torchsde._core.sdeint import sdeint as upstream_sdeint
    from torchsde.settings import METHODS, SDE_TYPES
except ImportError as error:
    raise _incompatible(str(error)) from error

# What we override, call or read on the objects above (beyond importing them).
_REQUIRED_ATTRIBUTES: Dict[str, Tuple[object, Tuple[str, ...]]] = {
    "RKAdaptiveStepsizeODESolver": (RKAdaptiveStepsizeODESolver, (
        "_adaptive_step", "_interp_fit", "integrate", "integrate_until_event")),
    "FixedGridODESolver": (FixedGridODESolver, ("_step_func", "integrate", "integrate_until_event")),
    "OdeintAdjointMethod": (OdeintAdjointMethod, ("apply", "backward")),
    "torchsde._core.methods": (sde_methods, ("select",)),
    "torchsde._core.misc": (sde_misc, ("handle_unused_kwargs", "assert_no_grad")),
    "_SdeintAdjointMethod": (_SdeintAdjointMethod, ("apply", "backward")),
    "ForwardSDE": (ForwardSDE, ("f_default", "f_and_g_default")),
    "BaseSDESolver": (BaseSDESolver, ("step", "integrate", "init_extra_solver_state")),
    "ReversibleHeun": (ReversibleHeun, ("init_extra_solver_state",)),
    "METHODS": (METHODS, ("all", "reversible_heun", "adjoint_reversible_heun")),
    "SDE_TYPES": (SDE_TYPES, ("all",)),
}

_missing = [f"{owner}.{attribute}" for owner, (obj, attributes) in _REQUIRED_ATTRIBUTES.items()
            for attribute in attributes if not hasattr(obj, attribute)]
if _missing:
    raise _incompatible("missing " + ", ".join(_missing))

__all__ = [
    "TESTED_RANGE", "OdeintAdjointMethod", "find_parameters", "handle_adjoint_norm_", "_interp_evaluate",
    "_all_adjoint_callback_names", "_all_callback_names", "_check_inputs", "_compute_error_ratio", "_flat_to_shape",
    "SOLVERS", "RKAdaptiveStepsizeODESolver", "_ButcherTableau", "_runge_kutta_step", "FixedGridODESolver",
    "sde_methods", "sde_misc", "sde_rms", "_SdeintAdjointMethod", "_select_default_adjoint_method", "ForwardSDE",
    "BaseSDESolver", "ReversibleHeun", "check_contract", "parse_return", "METHODS", "SDE_TYPES",
    "upstream_odeint", "upstream_odeint_adjoint", "upstream_sdeint", "upstream_sdeint_adjoint",
]

"""The mechanism behind ``intercept()``: upstream's module attributes, routed while a block is open.

``torchcde.cdeint`` and much user code call ``torchdiffeq.odeint`` (and ``odeint_adjoint``,
``torchsde.sdeint``, ``torchsde.sdeint_adjoint``) by attribute, at call time, so changing an
import cannot reach them. A :class:`Router` replaces those module attributes by *routed* functions
while at least one block is open anywhere in the process, and puts upstream's functions back when
the last one closes. Which calls a routed function sends on is decided per call, from a
:class:`contextvars.ContextVar` that only the open blocks set: in any other thread (or asyncio task
started outside a block) a routed function calls upstream's own function, so a plain solve there
gets upstream's result while a block is open elsewhere.

Rules for the attributes (one lock guards the count and the attributes):

- nothing happens at import; the first block to open installs, the last to close restores;
- an attribute is replaced only while it holds upstream's own function (taken from the module that
  defines it, see ``_upstream``). If other code had replaced it before the first block opened, it
  is left as it is, with a warning: we neither bypass nor wrap someone else's replacement;
- at the last close an attribute is restored only if it still holds our routed function. If other
  code replaced it while blocks were open, theirs is left in place (restoring would undo their
  change), with a warning. Our routed function, should their wrapper keep calling it, calls
  upstream's function outside a block, so the result is upstream's either way.

A routed function calls upstream's own function or the package's one-import function, never the
module attribute, so routing cannot recurse.
"""
import contextvars
import functools
import threading
import warnings
from types import ModuleType
from typing import Any, Callable, List, NamedTuple, Sequence

from ._warnings import user_stacklevel

_ROUTING: "contextvars.ContextVar[bool]" = contextvars.ContextVar("torchdiffeq_localreg_routing", default=False)


def routed_function(original: Callable, one_import: Callable) -> Callable:
    """A stand-in for ``original`` (upstream's function): inside an open block of this context it
    calls ``one_import`` (the package's function of the same signature), elsewhere ``original``."""

    @functools.wraps(original)
    def routed(*args: Any, **kwargs: Any) -> Any:
        if _ROUTING.get():
            return one_import(*args, **kwargs)
        return original(*args, **kwargs)

    routed.__module__ = __name__
    routed.__doc__ = (f"{original.__module__}.{original.__name__}, routed by torchdiffeq_localreg.intercept(): "
                      f"inside an intercepting block this calls torchdiffeq_localreg.{original.__name__}, "
                      f"elsewhere upstream's function.\n\nUpstream's documentation:\n\n{original.__doc__ or ''}")
    return routed


class Route(NamedTuple):
    """One module attribute to route: ``module.name`` holds ``original``; ``routed`` replaces it."""

    module: ModuleType
    name: str
    original: Callable
    routed: Callable

    def __str__(self) -> str:
        return f"{self.module.__name__}.{self.name}"


class Router:
    """Counts the open blocks of the whole process and swaps the attributes of ``routes``."""

    def __init__(self, routes: Sequence[Route]):
        self._routes = tuple(routes)
        self._lock = threading.Lock()
        self._open = 0
        self._installed: List[Route] = []

    @property
    def open_blocks(self) -> int:
        return self._open

    def open(self) -> contextvars.Token:
        """Installs the routed functions if no block is open yet, and routes this context's calls.

        Returns:
            The token to pass to :meth:`close`.
        """
        foreign = []
        with self._lock:
            if self._open == 0:
                for route in self._routes:
                    current = getattr(route.module, route.name)
                    if current is route.original:
                        setattr(route.module, route.name, route.routed)
                        self._installed.append(route)
                    elif current is not route.routed:
                        foreign.append(route)
            self._open += 1
        for route in foreign:
            warnings.warn(f"intercept: {route} is not torchdiffeq's / torchsde's own function (other code replaced it "
                          f"with {getattr(route.module, route.name)!r}); it is left as it is, so calls through it are "
                          f"not regularized.", RuntimeWarning, stacklevel=user_stacklevel())
        return _ROUTING.set(True)

    def close(self, token: contextvars.Token) -> None:
        """Stops routing this context's calls; the last open block restores upstream's functions."""
        kept = []
        try:
            _ROUTING.reset(token)
        finally:   # a token from another context must not leave the attributes routed for good
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    for route in self._installed:
                        if getattr(route.module, route.name) is route.routed:
                            setattr(route.module, route.name, route.original)
                        else:
                            kept.append(route)
                    self._installed = []
        for route in kept:
            warnings.warn(f"intercept: {route} was replaced by other code while routed "
                          f"({getattr(route.module, route.name)!r}); their replacement is left in place instead of "
                          f"restoring torchdiffeq's / torchsde's function.", RuntimeWarning,
                          stacklevel=user_stacklevel())

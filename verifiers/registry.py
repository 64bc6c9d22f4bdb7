"""The verifier registry: ``@verifiers.register("name")`` on a function or a class, then
``verifiers.get("name", **kwargs)`` anywhere (env kwargs, YAML specs, the CLI).

Verifier plugins (entry-point group ``rlenv.verifiers``) are loaded the first time the registry is
read, so ``import verifiers`` stays cheap. The built-ins (``format``, ``math``, ``code``,
``reward_model``) are plugins like any other, declared in rlenv's ``pyproject.toml``. A plugin that
fails to import is reported once with its name; the others still load.

>>> import verifiers
>>> @verifiers.register("shouts")                             # doctest: +SKIP
... def shouts(completion, task):
...     return float(completion.isupper())
>>> verifiers.get("shouts")("HI", None)                       # doctest: +SKIP
1.0
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import threading
from typing import Any, Callable, Optional, Union

from rlenv.plugins import VERIFIER_GROUP, load_plugins, print_registry_table

__all__ = ["VerifierSpec", "VerifierNotFoundError", "register", "unregister", "get", "spec",
           "list_verifiers", "pprint_registry", "registry"]


class VerifierNotFoundError(LookupError):
    """No verifier is registered under the requested name."""


@dataclasses.dataclass
class VerifierSpec:
    """One registered verifier.

    Attributes:
        name: the registry key.
        target: the function, the class, or ``"package.module:attr"`` resolved on first use.
        description: one line shown by ``rlenv verifiers`` (defaults to the docstring's first line).
        source: the module that registered it.
    """

    name: str
    target: Union[str, Callable[..., Any]]
    description: str = ""
    source: str = ""

    def load(self) -> Callable[..., Any]:
        """The function or class itself (imports a ``"module:attr"`` target)."""
        if not isinstance(self.target, str):
            return self.target
        mod, _, attr = self.target.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"verifier {self.name!r}: cannot load {self.target!r} ({e}); is the "
                              f"package that provides it installed?") from e

    def make(self, **kwargs) -> Any:
        """A ready verifier: a class is instantiated with ``kwargs``; a function is returned as is,
        or with ``kwargs`` bound as keyword arguments."""
        target = self.load()
        if inspect.isclass(target):
            try:
                return target(**kwargs)
            except TypeError as e:
                raise TypeError(f"verifier {self.name!r}: {target.__qualname__} rejected the arguments "
                                f"{sorted(kwargs)}: {e}") from e
        if not kwargs:
            return target
        bound = functools.partial(target, **kwargs)
        functools.update_wrapper(bound, target)  # keeps __name__ (the component name) and flags
        return bound


#: name -> VerifierSpec of everything registered so far (read it through :func:`get`)
registry: dict[str, VerifierSpec] = {}
_loaded = False
_lock = threading.RLock()


def _ensure_loaded() -> None:
    """Load the ``rlenv.verifiers`` plugins (the built-ins among them), once."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True  # first: the modules we load call register(), which must not recurse
        load_plugins(VERIFIER_GROUP)


def _caller_module(depth: int = 2) -> str:
    import sys

    f = sys._getframe(depth)
    while f is not None and f.f_globals.get("__name__", "").startswith("verifiers.registry"):
        f = f.f_back
    return f.f_globals.get("__name__", "") if f is not None else ""


def register(name: Optional[str] = None, target: Union[str, Callable[..., Any], None] = None, *,
             description: str = "", overwrite: bool = False):
    """Register a verifier under ``name``.

    As a decorator (``@register("name")`` or bare ``@register``) on a function
    ``(completion, task) -> float | VerifyResult | None`` or a class with ``score``; or called
    directly, ``register("name", target)``, where ``target`` may be ``"package.module:attr"`` so
    the module is imported only when the verifier is used. Returns the decorated object unchanged.

    Registering a taken name raises ``ValueError`` unless ``overwrite=True``.
    """
    if callable(name) and target is None:  # bare @register
        return register(None, name, description=description, overwrite=overwrite)

    def add(obj):
        key = name or getattr(obj, "name", None) or getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"verifiers.register: cannot tell the name of {obj!r}; pass one: "
                             f"@verifiers.register('my_verifier')")
        if not (callable(obj) or (isinstance(obj, str) and ":" in obj)):
            raise TypeError(f"verifier {key!r}: register a function, a class or 'module:attr', got "
                            f"{type(obj).__name__}")
        desc = description or (inspect.getdoc(obj) or "").split("\n", 1)[0] if not isinstance(obj, str) else description
        with _lock:
            if key in registry and not overwrite and registry[key].target is not obj:
                raise ValueError(f"verifier {key!r} is already registered (by {registry[key].source or '?'}); "
                                 f"choose another name or pass overwrite=True")
            registry[key] = VerifierSpec(key, obj, desc, _caller_module(1))
        return obj

    return add if target is None else add(target)


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (tests and notebooks)."""
    with _lock:
        registry.pop(name, None)


def spec(name: str) -> VerifierSpec:
    """The :class:`VerifierSpec` registered under ``name``; a clear error with suggestions otherwise."""
    _ensure_loaded()
    try:
        return registry[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(registry), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise VerifierNotFoundError(f"verifier {name!r} not found.{hint} Run `rlenv verifiers` to list "
                                f"the registered ones, or register yours with @verifiers.register({name!r}).")


def get(name: str, **kwargs) -> Any:
    """A ready-to-use verifier by name (classes are instantiated with ``kwargs``)."""
    return spec(name).make(**kwargs)


def list_verifiers() -> list[str]:
    """All registered names, sorted."""
    _ensure_loaded()
    return sorted(registry)


def pprint_registry(file=None) -> str:
    """Print (and return) a table of registered verifiers with their description and origin."""
    return print_registry_table(registry, list_verifiers(), "(no verifiers registered)", file)

"""The env registry: ``register`` an env factory under a versioned id, ``make`` it, look up its
``spec``, list what exists.

Ids look like ``name-vN`` (optionally ``namespace/name-vN``); bump the version whenever a change
would make old results incomparable. Env plugins (entry-point group ``rlenv.envs``) are loaded
lazily, the first time the registry is read, so ``import rlenv`` stays cheap and a user never has to
import a plugin by hand. The built-in tasks are one such plugin (the ``tasks`` package, declared in
rlenv's ``pyproject.toml``): the registry itself knows no env by name.

>>> import rlenv
>>> env = rlenv.make("arithmetic-v0", digits=2)          # doctest: +SKIP
>>> obs, info = env.reset(seed=0)                        # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import re
import threading
from typing import Any, Callable, Optional, Union

from .plugins import ENV_GROUP, load_plugins, plugin_errors, print_registry_table

__all__ = ["EnvSpec", "EnvNotFoundError", "DuplicateEnvError", "register", "unregister", "make",
           "spec", "envs", "pprint_registry", "registry"]

ENV_ID_RE = re.compile(r"^(?:(?P<namespace>[\w.-]+)/)?(?P<name>[\w.:-]+?)-v(?P<version>\d+)$")


class EnvNotFoundError(LookupError):
    """No env is registered under the requested id."""


class DuplicateEnvError(ValueError):
    """An id was registered twice."""


@dataclasses.dataclass
class EnvSpec:
    """How to build one registered env.

    Attributes:
        id: the versioned id, ``name-vN`` or ``namespace/name-vN``.
        entry_point: ``"package.module:factory"`` or the factory itself (a class or function
            returning an :class:`rlenv.Env`).
        kwargs: default keyword arguments for the factory; ``make(id, **overrides)`` updates them.
        description: one line shown by ``rlenv envs``.
        source: who registered it (the module name, or ``plugin:<name>``).
    """

    id: str
    entry_point: Union[str, Callable[..., Any]]
    kwargs: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    source: str = ""

    @property
    def name(self) -> str:
        """The id without namespace and version."""
        return ENV_ID_RE.match(self.id).group("name")

    @property
    def namespace(self) -> Optional[str]:
        return ENV_ID_RE.match(self.id).group("namespace")

    @property
    def version(self) -> int:
        return int(ENV_ID_RE.match(self.id).group("version"))

    def load(self) -> Callable[..., Any]:
        """Resolve the entry point to the factory callable."""
        if callable(self.entry_point):
            return self.entry_point
        mod_name, sep, attr = str(self.entry_point).partition(":")
        if not sep or not attr:
            raise ValueError(f"Env `{self.id}`: entry_point {self.entry_point!r} must look like "
                             f"'package.module:Factory' or be a callable")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ImportError(f"Env `{self.id}`: cannot import {mod_name!r} named by its entry point "
                              f"({e}); is the package that provides it installed?") from e
        try:
            return getattr(mod, attr)
        except AttributeError:
            raise AttributeError(f"Env `{self.id}`: module {mod_name!r} has no attribute {attr!r} "
                                 f"(entry point {self.entry_point!r})") from None

    def make(self, **overrides) -> Any:
        """Build the env with ``kwargs`` updated by ``overrides`` (see :func:`make`)."""
        return make(self, **overrides)


#: id -> EnvSpec of everything registered so far (read it through :func:`spec` / :func:`envs`)
registry: dict[str, EnvSpec] = {}
_loaded = False
_lock = threading.RLock()


def _ensure_loaded() -> None:
    """Load the env plugins (the built-in tasks among them), once, the first time the registry is
    read. A plugin that fails is reported by name and the others still load."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True  # before loading: plugin modules call register(), which must not recurse
        load_plugins(ENV_GROUP)


def _caller_module() -> str:
    import sys

    f = sys._getframe(2)
    while f is not None and f.f_globals.get("__name__", "").startswith("rlenv.registry"):
        f = f.f_back
    return f.f_globals.get("__name__", "") if f is not None else ""


def register(id: str, entry_point: Union[str, Callable[..., Any]], *, description: str = "",
             **kwargs) -> EnvSpec:
    """Register an env factory under ``id`` (``name-vN``); ``kwargs`` become its default arguments.

    Raises :class:`DuplicateEnvError` when ``id`` is already taken: register a new version
    (``name-v1``) instead of silently replacing the old one.
    """
    if not isinstance(id, str) or not ENV_ID_RE.match(id):
        raise ValueError(f"Env id {id!r} is malformed: use 'name-vN' (e.g. 'arithmetic-v0'), "
                         f"optionally with a namespace ('my_org/arithmetic-v0')")
    if not (callable(entry_point) or (isinstance(entry_point, str) and ":" in entry_point)):
        raise ValueError(f"Env `{id}`: entry_point must be 'package.module:Factory' or a callable, "
                         f"got {entry_point!r}")
    with _lock:
        if id in registry:
            old = registry[id]
            raise DuplicateEnvError(
                f"Env `{id}` is already registered (by {old.source or 'unknown'}). Register a new "
                f"version such as `{_next_version(id)}`, or call rlenv.registry.unregister({id!r}) first.")
        s = EnvSpec(id, entry_point, dict(kwargs), description, _caller_module())
        registry[id] = s
        return s


def _next_version(id: str) -> str:
    m = ENV_ID_RE.match(id)
    prefix = f"{m.group('namespace')}/" if m.group("namespace") else ""
    versions = [registry[k].version for k in registry if _same_name(k, id)]
    return f"{prefix}{m.group('name')}-v{max(versions + [int(m.group('version'))]) + 1}"


def _same_name(a: str, b: str) -> bool:
    ma, mb = ENV_ID_RE.match(a), ENV_ID_RE.match(b)
    return bool(ma and mb) and (ma.group("namespace"), ma.group("name")) == (mb.group("namespace"), mb.group("name"))


def unregister(id: str) -> None:
    """Remove ``id`` from the registry (tests and notebooks that re-register)."""
    with _lock:
        registry.pop(id, None)


def spec(id: str) -> EnvSpec:
    """The :class:`EnvSpec` registered under ``id``; a clear error with suggestions otherwise."""
    _ensure_loaded()
    try:
        return registry[id]
    except (KeyError, TypeError):
        pass
    hint = ""
    same = sorted(k for k in registry if isinstance(id, str) and ENV_ID_RE.match(id) and _same_name(k, id))
    if same:
        hint = f" Available versions: {', '.join(f'`{s}`' for s in same)}."
    else:
        close = difflib.get_close_matches(str(id), list(registry), n=3, cutoff=0.6)
        if close:
            hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?"
        elif isinstance(id, str) and not ENV_ID_RE.match(id):
            hint = " Env ids carry a version, like `name-v0`."
    broken = [str(e) for e in plugin_errors(ENV_GROUP)]
    note = f" (Note: {'; '.join(broken)}.)" if broken else ""
    raise EnvNotFoundError(f"Env `{id}` not found.{hint} Run `rlenv envs` to list registered envs.{note}")


def make(id: Union[str, EnvSpec], **overrides) -> Any:
    """Build the env registered under ``id`` with its default kwargs updated by ``overrides``.

    The returned env has ``env.spec`` set to a copy of the spec holding the kwargs actually used.
    """
    s = id if isinstance(id, EnvSpec) else spec(id)
    factory = s.load()
    kwargs = {**s.kwargs, **overrides}
    try:
        env = factory(**kwargs)
    except TypeError as e:
        raise TypeError(f"Env `{s.id}`: its factory {getattr(factory, '__qualname__', factory)!r} "
                        f"rejected the arguments {sorted(kwargs)}: {e}") from e
    if not (callable(getattr(env, "reset", None)) and callable(getattr(env, "step", None))):
        raise TypeError(f"Env `{s.id}`: the entry point returned {type(env).__name__}, which has no "
                        f"reset()/step(); return an rlenv.Env")
    used = copy.copy(s)
    used.kwargs = kwargs
    try:
        env.spec = used
    except AttributeError:  # an env with slots or a read-only property: still usable
        pass
    return env


def envs() -> list[str]:
    """All registered ids, sorted."""
    _ensure_loaded()
    return sorted(registry)


def pprint_registry(file=None) -> str:
    """Print (and return) a table of registered ids with their description and origin."""
    return print_registry_table(registry, envs(), "(no envs registered)", file)

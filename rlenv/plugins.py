"""Entry-point plugins: third-party packages that add envs (group ``rlenv.envs``) or verifiers
(group ``rlenv.verifiers``) without the user importing them.

A plugin declares, in its ``pyproject.toml``::

    [project.entry-points."rlenv.envs"]
    my_envs = "my_pkg.envs"            # a module: importing it runs its rlenv.register(...) calls
    more = "my_pkg.hooks:register_all" # a callable: it is called once

Each group is loaded once per process, the first time its registry is used. A plugin that fails
to import or raises is reported with its name (a warning, and :func:`plugin_errors`), and the other
plugins still load.

rlenv's own built-ins are plugins too: the ``tasks`` package and the built-in verifier modules are
entry points in rlenv's ``pyproject.toml``, so the core never imports them by name. A source
checkout whose installed metadata predates an entry point (or that was never installed) still finds
them: the entry points declared in the checkout's own ``pyproject.toml`` are read as well.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import warnings
from importlib import metadata
from pathlib import Path

__all__ = ["ENV_GROUP", "VERIFIER_GROUP", "PluginError", "load_plugins", "plugin_errors"]

ENV_GROUP = "rlenv.envs"
VERIFIER_GROUP = "rlenv.verifiers"
#: the distribution rlenv ships in; its source checkout's pyproject.toml declares the built-ins
DISTRIBUTION = "rlenv-rlvr"


@dataclasses.dataclass
class PluginError:
    """A plugin that failed to load: its entry-point name, target and the error."""

    group: str
    name: str
    value: str
    error: str

    def __str__(self) -> str:
        return (f"plugin {self.name!r} ({self.value}) in entry-point group {self.group!r} failed to "
                f"load: {self.error}")


_loaded: set[str] = set()
_errors: list[PluginError] = []
_lock = threading.RLock()


@functools.lru_cache(maxsize=None)
def _source_tree_entry_points() -> dict:
    """``{group: {name: value}}`` declared in the ``pyproject.toml`` of the source checkout this
    package is imported from (none for an installed wheel, which has no such file beside it)."""
    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed metadata alone
        return {}
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return {}
    if project.get("name") != DISTRIBUTION:
        return {}
    return {g: dict(eps) for g, eps in (project.get("entry-points") or {}).items() if isinstance(eps, dict)}


def _entry_points(group: str) -> list:
    eps = list(metadata.entry_points(group=group))
    eps += [metadata.EntryPoint(name=n, value=v, group=group)
            for n, v in _source_tree_entry_points().get(group, {}).items()]
    seen, out = set(), []
    for ep in eps:  # the same distribution visible twice on sys.path must not load twice
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return sorted(out, key=lambda e: e.name)


def load_plugins(group: str, force: bool = False) -> list[PluginError]:
    """Load every entry point of ``group`` once per process; returns the failures of this call.

    An entry point that names a module is imported; one that names a callable (not a class) is
    called with no arguments. ``force=True`` loads the group again (tests only).
    """
    with _lock:
        if group in _loaded and not force:
            return []
        _loaded.add(group)  # set first: a plugin that itself uses the registry must not recurse
        failures = []
        for ep in _entry_points(group):
            try:
                obj = ep.load()
                if callable(obj) and not inspect.isclass(obj) and not inspect.ismodule(obj):
                    obj()
            except BaseException as e:  # noqa: BLE001 - a broken plugin must not break the others
                if isinstance(e, KeyboardInterrupt):
                    raise
                err = PluginError(group, ep.name, ep.value, f"{type(e).__name__}: {e}")
                failures.append(err)
                _errors.append(err)
                warnings.warn(f"{err}; the other plugins are unaffected. Fix or uninstall it.",
                              RuntimeWarning, stacklevel=2)
        return failures


def plugin_errors(group: str | None = None) -> list[PluginError]:
    """Failures recorded so far (all groups, or only ``group``)."""
    return [e for e in _errors if group is None or e.group == group]


def print_registry_table(registry: dict, names: list, empty: str, file=None) -> str:
    """Print (and return) one line per registered name: ``name  description  [origin]``. Shared by
    the env and verifier registries' ``pprint_registry``."""
    width = max([len(n) for n in names] + [2])
    lines = [f"{n:<{width}}  {registry[n].description or '-'}  [{registry[n].source or '?'}]" for n in names]
    text = "\n".join(lines) if lines else empty
    print(text, file=file)
    return text

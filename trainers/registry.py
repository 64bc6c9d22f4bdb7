"""Name registries (verl's idea, small): advantage estimators, policy losses, KL estimators, loss
aggregations, DPO losses and training stages are each chosen by name from one :class:`Registry`,
which is the only list of those names — configs validate against it when they are built, so
anything registered (here, in your own module or in a plugin) works from Python and from a spec.

Registering your own is one decorator::

    from trainers.advantages import register_advantage

    @register_advantage("my_baseline")
    def my_baseline(rewards, group_ids, valid=None, *, shrink: float = 0.5):
        ...

then ``GRPOConfig(advantage_estimator="my_baseline", advantage_kwargs={"shrink": 0.3})``, or in a
spec ``plugins: [my_module]`` and ``advantage_estimator: my_baseline``.

**Options.** A registered function's keyword-only parameters are its options. The trainer fills
each one from the config (:func:`bind_options`): from the matching ``*_kwargs`` dict of the config
when it is set there, else from the config field of the same name (``epsilon_low``, ``beta``, …),
else the function's default; a parameter named ``config`` receives the whole config. So a loss
declares what it needs, and a setting of your own needs no new config field.

**Plugins.** Installed packages can register through the entry-point group ``rlenv.trainers``
(a module, imported, or a callable, called), loaded the first time any of these registries is read.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Optional

PLUGIN_GROUP = "rlenv.trainers"


def _load_plugins() -> None:
    from rlenv.plugins import load_plugins

    load_plugins(PLUGIN_GROUP)


class Registry:
    """A name → object table with a decorator to fill it and a lookup that explains misses.

    Args:
        kind: what the entries are, for messages ("policy loss").
        how: how a user adds one, appended to "unknown name" errors.
    """

    def __init__(self, kind: str, how: str = ""):
        self.kind = kind
        self.how = how
        self._table: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Callable[[Any], Any]:
        """``@registry.register("name")`` (decorator), or ``registry.register("name", obj)``."""

        def deco(fn: Any) -> Any:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
            if name in self._table and self._table[name] is not fn:
                old = self._table[name]
                raise ValueError(f"{self.kind} `{name}` is already registered (by "
                                 f"{getattr(old, '__module__', '?')}); pick another name")
            self._table[name] = fn
            return fn

        return deco if obj is None else deco(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and notebooks that re-register)."""
        self._table.pop(name, None)

    def get(self, name: Any) -> Any:
        """The entry registered as ``name``; an unknown name raises a ValueError with the closest
        registered name and how to add one. A callable passed directly is returned as is."""
        if callable(name) and not isinstance(name, str):
            return name
        if name not in self._table:
            _load_plugins()
        if name not in self._table:
            close = difflib.get_close_matches(str(name), list(self._table), n=1)
            hint = f" — did you mean `{close[0]}`?" if close else "."
            how = f" {self.how}" if self.how else ""
            raise ValueError(f"unknown {self.kind} `{name}`{hint} Registered: {', '.join(self.names())}.{how}")
        return self._table[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        _load_plugins()
        return sorted(self._table)

    def __contains__(self, name: Any) -> bool:
        if name not in self._table:
            _load_plugins()
        return name in self._table

    def __iter__(self):
        return iter(self.names())


def option_names(fn: Callable) -> list[str]:
    """The options of a registered function: its keyword-only parameters."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]


def check_options(fn: Callable, options: Optional[dict], kind: str, name: str) -> None:
    """Every key of ``options`` must be an option of ``fn``: a ValueError with "did you mean" otherwise
    (a setting that nothing reads is refused, never ignored)."""
    known = [n for n in option_names(fn) if n != "config"]
    for key in options or {}:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean `{close[0]}`?" if close else (
                f"its options: {', '.join(known)}" if known else "it takes no options")
            raise ValueError(f"{kind} `{name}` has no option `{key}` — {hint} (options are the function's "
                             f"keyword-only parameters)")


def bind_options(fn: Callable, config: Any = None, options: Optional[dict] = None) -> dict:
    """Keyword arguments for ``fn``'s options: from ``options`` (the config's ``*_kwargs``), else the
    config field of the same name, else ``fn``'s default; ``config`` receives the config itself."""
    out = {}
    fields = getattr(type(config), "model_fields", {}) if config is not None else {}
    for name in option_names(fn):
        if options and name in options:
            out[name] = options[name]
        elif name == "config" and config is not None:
            out[name] = config
        elif name in fields:
            out[name] = getattr(config, name)
    return out

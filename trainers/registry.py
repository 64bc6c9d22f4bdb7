"""Name registries for advantage estimators, policy losses and KL estimators (verl's idea, small).

A config names the function (``advantage="grpo"``, ``policy_loss="clip"``); the trainer looks it up
here. Registering your own is one decorator::

    from trainers.advantages import register_advantage

    @register_advantage("my_baseline")
    def my_baseline(rewards, group_ids, valid=None):
        ...
"""

from __future__ import annotations

import difflib
from typing import Callable


class Registry:
    """A name -> function table with a decorator to fill it and a lookup that explains misses."""

    def __init__(self, kind: str):
        self.kind = kind
        self._table: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: ``@registry.register("name")`` adds the function under ``name``."""

        def deco(fn: Callable) -> Callable:
            if name in self._table and self._table[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered "
                                 f"(by {self._table[name].__module__}); pick another name")
            self._table[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable:
        """The function registered as ``name``; an unknown name raises a ValueError listing the known ones."""
        if callable(name):  # a function passed directly is used as is
            return name
        if name not in self._table:
            close = difflib.get_close_matches(str(name), list(self._table), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}{hint} Known: {sorted(self._table)}")
        return self._table[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table

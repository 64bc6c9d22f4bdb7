"""rlenv — gym-like environments, pluggable verifiers and trainers for RL of language models from
verifiable rewards.

The public surface::

    import rlenv
    rlenv.envs()                          # registered ids ("arithmetic-v0", …)
    env = rlenv.make("arithmetic-v0")     # build one
    obs, info = env.reset(seed=0)         # chat messages
    obs, reward, terminated, truncated, info = env.step("<a>46</a>")
    rlenv.check_env(env)                  # API checker

The names below are loaded on first use (PEP 562), so importing a bottom-layer module such as
``rlenv.core`` or ``rlenv.parsers`` — as the verifiers do — runs none of the layers above it
(envs, registry, rollout). Built-in tasks and plugins are loaded through their entry points the
first time the registry is read; importing ``rlenv`` imports neither ``tasks`` nor ``trainers``.
"""

from __future__ import annotations

import importlib
import sys as _sys
import types as _types
import warnings as _warnings

__version__ = "0.1.0"

#: public name -> the submodule that defines it (imported when the name is first read)
_EXPORTS = {
    "Task": "core", "Env": "core",
    "MultiTurnEnv": "env", "SingleTurnEnv": "env", "TaskEnv": "env", "format_prompt": "env",
    "render_chat": "chat",
    "register": "registry", "make": "registry", "spec": "registry", "envs": "registry",
    "pprint_registry": "registry", "EnvSpec": "registry", "EnvNotFoundError": "registry",
    "DuplicateEnvError": "registry",
    "check_env": "checker", "EnvCheckError": "checker",
    "TaskSource": "sources", "ListSource": "sources", "DatasetSource": "sources", "GeneratorSource": "sources",
    "parse_boxed": "parsers", "parse_tag": "parsers", "parse_gsm8k": "parsers", "parse_last_number": "parsers",
    "parse_code_block": "parsers", "check_think_answer_format": "parsers",
}

# TaskEnv is a deprecated alias (reading it warns), so `from rlenv import *` leaves it out
__all__ = [name for name in _EXPORTS if name != "TaskEnv"] + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlenv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    if name != "TaskEnv":  # cache, except the alias, so each use of it warns
        globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _MovedModule(_types.ModuleType):
    """A module that moved: ``from rlenv.spec import load_spec`` still works, with a
    DeprecationWarning, while ``rlenv.spec`` itself stays the registry lookup ``spec(id)``."""

    def __init__(self, name: str, target: str):
        super().__init__(name, f"Deprecated alias of {target}.")
        self._target = target

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        _warnings.warn(f"`{self.__name__}` moved to `{self._target}` (`rlenv.spec` is the env registry's "
                       f"spec(id)); import {attr} from {self._target}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(self._target), attr)


# seeded in sys.modules (not set as an attribute), so importing it never rebinds `rlenv.spec`
_sys.modules.setdefault(__name__ + ".spec", _MovedModule(__name__ + ".spec", __name__ + "." + "runspec"))

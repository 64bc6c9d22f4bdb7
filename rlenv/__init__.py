"""rlenv — gym-like environments, pluggable verifiers and trainers for RL of language models from
verifiable rewards.

The public surface::

    import rlenv
    rlenv.envs()                          # registered ids ("arithmetic-v0", …)
    env = rlenv.make("arithmetic-v0")     # build one
    obs, info = env.reset(seed=0)         # chat messages
    obs, reward, terminated, truncated, info = env.step("<a>46</a>")
    rlenv.check_env(env)                  # API checker

Built-in tasks and plugins are loaded lazily, the first time the registry is read; importing
``rlenv`` imports neither ``tasks`` nor ``trainers``.
"""

import importlib as _importlib
import sys as _sys
import types as _types
import warnings as _warnings

from .checker import EnvCheckError, check_env
from .core import Env, Task
from .env import MultiTurnEnv, SingleTurnEnv, TaskEnv, format_prompt, render_chat
from .parsers import (check_think_answer_format, parse_boxed, parse_code_block, parse_gsm8k,
                      parse_last_number, parse_tag)
from .registry import (DuplicateEnvError, EnvNotFoundError, EnvSpec, envs, make, pprint_registry,
                       register, spec)
from .sources import DatasetSource, GeneratorSource, ListSource, TaskSource

__version__ = "0.1.0"


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
        return getattr(_importlib.import_module(self._target), attr)


# seeded in sys.modules (not set as an attribute), so importing it never rebinds `rlenv.spec`
_sys.modules.setdefault(__name__ + ".spec", _MovedModule(__name__ + ".spec", __name__ + "." + "runspec"))

__all__ = [
    "Task", "Env", "SingleTurnEnv", "TaskEnv", "MultiTurnEnv", "format_prompt", "render_chat",
    "register", "make", "spec", "envs", "pprint_registry", "EnvSpec", "EnvNotFoundError",
    "DuplicateEnvError", "check_env", "EnvCheckError", "TaskSource", "ListSource", "DatasetSource",
    "GeneratorSource", "parse_boxed", "parse_tag", "parse_gsm8k", "parse_last_number",
    "parse_code_block", "check_think_answer_format", "__version__",
]

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

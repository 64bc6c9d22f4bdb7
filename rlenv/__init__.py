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

from .checker import EnvCheckError, check_env
from .core import Env, Task
from .env import MultiTurnEnv, SingleTurnEnv, TaskEnv, format_prompt, render_chat
from .parsers import (check_think_answer_format, parse_boxed, parse_code_block, parse_gsm8k,
                      parse_last_number, parse_tag)
from .registry import (DuplicateEnvError, EnvNotFoundError, EnvSpec, envs, make, pprint_registry,
                       register, spec)
from .sources import DatasetSource, GeneratorSource, ListSource, TaskSource

__version__ = "0.1.0"

__all__ = [
    "Task", "Env", "SingleTurnEnv", "TaskEnv", "MultiTurnEnv", "format_prompt", "render_chat",
    "register", "make", "spec", "envs", "pprint_registry", "EnvSpec", "EnvNotFoundError",
    "DuplicateEnvError", "check_env", "EnvCheckError", "TaskSource", "ListSource", "DatasetSource",
    "GeneratorSource", "parse_boxed", "parse_tag", "parse_gsm8k", "parse_last_number",
    "parse_code_block", "check_think_answer_format", "__version__",
]

"""``check_env(env)``: does an env follow the rlenv API? (In the spirit of Gymnasium's env checker.)

It checks the ``reset``/``step`` signatures and return types, that the observation is a chat
message list, that episodes end within ``max_turns``, and that the same seed gives the same task.
Failures raise :class:`EnvCheckError` with a message saying what to fix.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

from .core import Env

__all__ = ["EnvCheckError", "check_env"]

_ROLES = {"system", "user", "assistant", "tool"}


class EnvCheckError(AssertionError):
    """The env does not follow the rlenv API."""


def _fail(msg: str) -> None:
    raise EnvCheckError(msg)


def _check_messages(obs: Any, where: str, allow_empty: bool) -> None:
    if not isinstance(obs, list):
        _fail(f"{where}: the observation must be a list of chat messages, got {type(obs).__name__}")
    if not obs and not allow_empty:
        _fail(f"{where}: the observation is empty; reset() must return at least the prompt message")
    for i, m in enumerate(obs):
        if not isinstance(m, dict):
            _fail(f"{where}: observation[{i}] must be a dict like {{'role': 'user', 'content': '...'}}, "
                  f"got {type(m).__name__}")
        if m.get("role") not in _ROLES:
            _fail(f"{where}: observation[{i}]['role'] is {m.get('role')!r}; use one of {sorted(_ROLES)}")
        if not isinstance(m.get("content"), str):
            _fail(f"{where}: observation[{i}]['content'] must be a str, got {type(m.get('content')).__name__}")


def _call(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except EnvCheckError:
        raise
    except Exception as e:  # name the call that broke, keep the original as the cause
        raise EnvCheckError(f"{what} raised {type(e).__name__}: {e}") from e


def _check_signature(env: Any) -> None:
    for name in ("reset", "step"):
        if not callable(getattr(env, name, None)):
            _fail(f"the env has no {name}() method; subclass rlenv.Env and implement reset and step")
    params = inspect.signature(env.reset).parameters
    for p in ("seed", "options"):
        if p not in params and not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            _fail(f"reset() must accept the keyword argument `{p}`: def reset(self, *, seed=None, options=None)")
    if len([v for v in inspect.signature(env.step).parameters.values()
            if v.kind in (v.POSITIONAL_ONLY, v.POSITIONAL_OR_KEYWORD)]) < 1:
        _fail("step() must take the completion as its one positional argument: def step(self, action)")


def _check_reset(env: Any, seed: int) -> list:
    out = _call(f"reset(seed={seed})", env.reset, seed=seed)
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(f"reset() must return (observation, info), got {type(out).__name__}"
              f"{' of length ' + str(len(out)) if isinstance(out, tuple) else ''}")
    obs, info = out
    _check_messages(obs, "reset()", allow_empty=False)
    if not isinstance(info, dict):
        _fail(f"reset() info must be a dict, got {type(info).__name__}")
    return obs


def _check_step(env: Any, action: str) -> tuple:
    out = _call(f"step({action!r})", env.step, action)
    if not (isinstance(out, tuple) and len(out) == 5):
        _fail("step() must return the 5-tuple (observation, reward, terminated, truncated, info)")
    obs, reward, terminated, truncated, info = out
    _check_messages(obs, "step()", allow_empty=True)
    try:
        r = float(reward)
    except (TypeError, ValueError):
        _fail(f"step() reward must be a number, got {type(reward).__name__}")
    if math.isnan(r) or math.isinf(r):
        _fail(f"step() reward must be finite, got {r}")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, bool):
            _fail(f"step() {name} must be a bool, got {type(flag).__name__}")
    if not isinstance(info, dict):
        _fail(f"step() info must be a dict, got {type(info).__name__}")
    if "scores" in info and not isinstance(info["scores"], dict):
        _fail(f"step() info['scores'] must map verifier names to rewards, got {type(info['scores']).__name__}")
    return out


def _episode(env: Any, seed: int, action: str) -> tuple[list, list]:
    """Run one episode with a fixed action; returns the first observation and the rewards."""
    obs = _check_reset(env, seed)
    max_turns = int(getattr(env, "max_turns", 1) or 1)
    rewards = []
    for _ in range(max_turns):
        _, reward, terminated, truncated, _ = _check_step(env, action)
        rewards.append(float(reward))
        if terminated or truncated:
            return obs, rewards
    _fail(f"the episode did not end within max_turns={max_turns}: step() must return truncated=True "
          f"when the turn limit is reached")


def check_env(env: Any, seed: int = 0, action: str = "I don't know.") -> None:
    """Check that ``env`` follows the rlenv API; raises :class:`EnvCheckError` on the first problem.

    Runs a few short episodes with a fixed ``action`` (no model needed). Warns (does not fail) when
    the env is not a subclass of :class:`rlenv.Env`.
    """
    if not isinstance(env, Env):
        warnings.warn(f"{type(env).__name__} does not subclass rlenv.Env; it works if it has the same "
                      f"reset/step shape, but subclassing documents the contract", UserWarning, stacklevel=2)
    _check_signature(env)
    obs_a, rew_a = _episode(env, seed, action)
    obs_b, rew_b = _episode(env, seed + 1, action)
    obs_c, rew_c = _episode(env, seed, action)
    if obs_a != obs_c:
        _fail(f"reset(seed={seed}) gave different observations on two calls; draw tasks from "
              f"self.np_random and reseed it in reset (call super().reset(seed=seed))")
    if rew_a != rew_c:
        _fail(f"the same seed and the same completion gave different rewards {rew_a} and {rew_c}; "
              f"rewards must be deterministic")
    del obs_b, rew_b  # another seed only has to work; it may legitimately give the same task

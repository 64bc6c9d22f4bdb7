"""The two public types everything else is built on: :class:`Task` and :class:`Env`.

An :class:`Env` is Gymnasium-shaped. ``reset`` draws a task and returns the chat messages the model
sees; ``step`` takes the model's completion (a string), scores it with the env's verifiers and returns
``(observation, reward, terminated, truncated, info)``. Single-turn envs terminate after the first
step; multi-turn envs answer each turn (execution feedback, a tool result) until they terminate or a
turn limit truncates.

A plain subclass that implements only ``reset`` and ``step`` is a valid env, as in Gymnasium — no
``super().__init__()`` needed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, SupportsFloat

import numpy as np

Message = dict  # {"role": "system" | "user" | "assistant" | "tool", "content": str}
Messages = list  # list[Message]


@dataclasses.dataclass
class Task:
    """One problem.

    Attributes:
        prompt: the question, either a string (becomes one user message) or a list of chat messages.
        answer: the reference the verifiers compare against: a gold answer, a list of tests, …
        info: free-form extra data (difficulty, source row, test harness, …) passed to verifiers.
        id: a stable identifier (data set row id or procedural seed), used in logs and samples.
    """

    prompt: Any
    answer: Any = None
    info: dict = dataclasses.field(default_factory=dict)
    id: Optional[str] = None

    def messages(self) -> list:
        """The prompt as a chat message list (a string prompt becomes one user message)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        if isinstance(self.prompt, (list, tuple)):
            return [dict(m) for m in self.prompt]
        raise TypeError(
            f"Task.prompt must be a string or a list of chat messages, got {type(self.prompt).__name__}"
        )


class Env:
    """Base class of every environment (gym-like).

    Subclasses implement :meth:`reset` and :meth:`step`. Everything else here is optional and has a
    sensible default, so a plain subclass that never calls ``super().__init__()`` still works with
    :func:`rlenv.make`, rollout collection and the trainers.
    """

    #: set by :func:`rlenv.make` to the :class:`rlenv.registry.EnvSpec` the env was made from
    spec: Any = None
    #: free-form metadata (e.g. ``{"multi_turn": True}``)
    metadata: dict = {}
    #: the turn limit; an episode that reaches it is truncated
    max_turns: int = 1

    _np_random: Optional[np.random.Generator] = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[list, dict]:
        """Start an episode. Returns ``(observation, info)``; the observation is a chat message list.

        ``seed`` reseeds the env's random generator (the same seed gives the same task).
        ``options`` may pin the task: ``{"task": Task}`` or ``{"task_index": i}`` — how the G
        samples of a GRPO group all get the same prompt.
        """
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        return [], {}

    def step(self, action: str) -> tuple[list, SupportsFloat, bool, bool, dict]:
        """Take the model's completion for this turn.

        Returns ``(observation, reward, terminated, truncated, info)``: the observation is the
        env's reply as chat messages (empty when the episode ends), ``info["scores"]`` holds each
        verifier's sub-score and ``info["failed"]`` is True when a verifier failed for
        infrastructure reasons (timeout, exception) rather than judging the answer wrong.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (sandbox pools, reward models). Safe to call twice."""

    @property
    def np_random(self) -> np.random.Generator:
        """The env's random generator, created unseeded on first use."""
        if self._np_random is None:
            self._np_random = np.random.default_rng()
        return self._np_random

    @property
    def unwrapped(self) -> "Env":
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        sid = getattr(self.spec, "id", None)
        return f"<{type(self).__name__}{' ' + sid if sid else ''}>"

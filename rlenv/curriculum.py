"""Curriculum: raise an env's difficulty knob as the training pass rate rises.

A run spec turns it on per env::

    env:
      id: arithmetic-v0
      kwargs: {digits: 2}
      curriculum: {knob: difficulty, levels: [0, 1, 2], raise_at: 0.8, window: 5}

The online trainers feed it the pass rate of every rollout; once the mean of the last ``window``
pass rates reaches ``raise_at``, the env is rebuilt with the next level (``rlenv.make(id,
**kwargs, knob=level)``) and the window starts over, so a level is judged only on its own rollouts.
The last level is kept for the rest of the run.

    cur = Curriculum("arithmetic-v0", knob="difficulty", levels=[0, 1, 2], raise_at=0.8, window=3)
    env = cur.make_env()           # difficulty 0
    cur.observe(0.9)               # → False (window not full yet)
    ...
    if cur.observe(0.85):          # → True: the level was raised
        env = cur.make_env()       # difficulty 1
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any, Optional


@dataclasses.dataclass
class Curriculum:
    """Which knob of ``env_id`` to raise, through which ``levels``, and when.

    Args:
        env_id: the registered env.
        knob: the factory keyword the levels set (``difficulty``, ``digits``, …).
        levels: the values of ``knob`` in order, easiest first (at least two).
        raise_at: raise the level once the mean pass rate of the last ``window`` rollouts is ≥ this.
        window: how many rollouts the mean spans.
        env_kwargs: the env's other keyword arguments (``knob`` must not be among them).
    """

    env_id: str
    knob: str
    levels: list
    raise_at: float = 0.8
    window: int = 5
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    level_index: int = 0

    def __post_init__(self):
        if not isinstance(self.knob, str) or not self.knob:
            raise ValueError(f"curriculum.knob must be the name of an env keyword argument, got {self.knob!r}")
        if not isinstance(self.levels, (list, tuple)) or len(self.levels) < 2:
            raise ValueError(f"curriculum.levels must list at least two values of `{self.knob}`, easiest first, "
                             f"got {self.levels!r}")
        if isinstance(self.raise_at, bool) or not isinstance(self.raise_at, (int, float)) or not 0 < self.raise_at <= 1:
            raise ValueError(f"curriculum.raise_at must be a pass rate in (0, 1], got {self.raise_at!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"curriculum.window must be a positive int (rollouts averaged), got {self.window!r}")
        if self.knob in self.env_kwargs:
            raise ValueError(f"curriculum.knob `{self.knob}` is also set in env.kwargs "
                             f"({self.env_kwargs[self.knob]!r}); remove it there, the curriculum sets it")
        if not 0 <= self.level_index < len(self.levels):
            raise ValueError(f"curriculum.level_index must be in [0, {len(self.levels) - 1}], got {self.level_index!r}")
        self.levels = list(self.levels)
        self._recent: deque = deque(maxlen=self.window)

    @property
    def level(self) -> Any:
        """The current value of the knob."""
        return self.levels[self.level_index]

    @property
    def at_last_level(self) -> bool:
        return self.level_index == len(self.levels) - 1

    def kwargs(self) -> dict:
        """The env's keyword arguments at the current level."""
        return {**self.env_kwargs, self.knob: self.level}

    def make_env(self) -> Any:
        """Build the env at the current level."""
        import rlenv

        return rlenv.make(self.env_id, **self.kwargs())

    def observe(self, pass_rate: float) -> bool:
        """Record one rollout's pass rate; True when this raised the level (rebuild the env then)."""
        if self.at_last_level:
            return False
        self._recent.append(float(pass_rate))
        if len(self._recent) == self.window and sum(self._recent) / self.window >= self.raise_at:
            self.level_index += 1
            self._recent.clear()  # the next level is judged on its own rollouts only
            return True
        return False

    # -- checkpoint state (exact resume) -----------------------------------------------------------
    def state_dict(self) -> dict:
        """The mutable state: level and the pass rates in the current window."""
        return {"level_index": self.level_index, "recent": list(self._recent)}

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Restore :meth:`state_dict` output (no-op for None)."""
        if not state:
            return
        self.level_index = int(state["level_index"])
        self._recent = deque((float(x) for x in state.get("recent", [])), maxlen=self.window)

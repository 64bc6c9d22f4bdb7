"""TRL interoperability, inward: a TRL reward function works as a verifier unchanged::

    def reward_len(completions, **kwargs):          # TRL's documented shape
        return [-abs(20 - len(c)) for c in completions]

    rubric = Rubric([verifiers.from_trl(reward_len)])   # or just Rubric([reward_len])

It is called once per batch as ``fn(prompts=..., completions=..., **columns)`` where each task's
``info`` entries (the data set's columns) and ``answer`` arrive as keyword lists, exactly as TRL's
GRPOTrainer passes dataset columns. Conversational tasks (``task.prompt`` a message list) get
conversational prompts and completions (``[{"role": "assistant", "content": ...}]``). ``None`` in
the returned list means "not applicable" (masked), as in TRL. ``async def`` functions work too.

This module sits below :mod:`verifiers.rubric` (which wraps such functions automatically); the
outward direction, a rubric as a TRL reward function, is :mod:`verifiers.trl_compat`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence

from .base import NOT_APPLICABLE, VerifyResult, completion_text

__all__ = ["from_trl", "TRLRewardVerifier", "is_trl_reward_function", "TRL_RUNTIME_KWARGS"]

#: keyword arguments TRL's GRPOTrainer adds besides the data set columns (not task data)
TRL_RUNTIME_KWARGS = ("completion_ids", "trainer_state", "log_extra", "log_metric", "environments")


def is_trl_reward_function(fn: Any) -> bool:
    """True for a plain function shaped like a TRL reward function: it takes ``completions``
    (plural) and not our ``(completion, task)``."""
    if isinstance(fn, TRLRewardVerifier) or not callable(fn) or inspect.isclass(fn):
        return False
    if any(callable(getattr(fn, m, None)) for m in ("score", "score_batch", "score_group")):
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "completions" in params and "completion" not in params and "task" not in params


class TRLRewardVerifier:
    """A TRL reward function as a batch verifier (see the module docstring).

    Attributes:
        metrics: the last values the function reported through ``log_metric(name, value)``.
        extra: the columns it reported through ``log_extra(column, values)`` in the last call.
    """

    def __init__(self, fn: Callable, name: Optional[str] = None):
        if not callable(fn):
            raise TypeError(f"from_trl expects a reward function fn(prompts, completions, **kwargs), "
                            f"got {type(fn).__name__}")
        self.fn = fn
        base = fn
        while hasattr(base, "func"):  # functools.partial, as TRL names it
            base = base.func
        self.name = name or getattr(base, "__name__", type(base).__name__)
        self.metrics: dict = {}
        self.extra: dict = {}
        params = inspect.signature(fn).parameters.values()
        self._takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self._accepts = {p.name for p in inspect.signature(fn).parameters.values()}
        for attr in ("call_timeout", "heavy"):
            if hasattr(fn, attr):
                setattr(self, attr, getattr(fn, attr))

    def _kwargs(self, completions: Sequence[str], tasks: Sequence[Any]) -> dict:
        conversational = bool(tasks) and all(isinstance(getattr(t, "prompt", None), (list, tuple)) for t in tasks)
        if conversational:
            prompts = [[dict(m) for m in t.prompt] for t in tasks]
            comps = [[{"role": "assistant", "content": c}] for c in completions]
        else:
            prompts = [t.prompt if isinstance(t.prompt, str) else str(t.prompt) for t in tasks]
            comps = list(completions)
        columns: dict = {}
        for i, t in enumerate(tasks):
            info = dict(getattr(t, "info", None) or {})
            if "answer" not in info and getattr(t, "answer", None) is not None:
                info["answer"] = t.answer
            for k, v in info.items():
                columns.setdefault(k, [None] * len(tasks))[i] = v
        self.metrics, self.extra = {}, {}
        columns.update(prompts=prompts, completions=comps, trainer_state=None,
                       log_metric=lambda name, value: self.metrics.__setitem__(name, value),
                       log_extra=lambda col, values: self.extra.setdefault(col, []).extend(values))
        if self._takes_all:
            return columns
        return {k: v for k, v in columns.items() if k in self._accepts}

    def _results(self, out: Any, n: int) -> list:
        out = list(out)
        if len(out) != n:
            raise ValueError(f"TRL reward function {self.name!r} returned {len(out)} rewards for {n} "
                             f"completions; return exactly one per completion")
        return [VerifyResult(0.0, NOT_APPLICABLE) if r is None else VerifyResult.from_value(r) for r in out]

    def score_batch(self, completions: Sequence[str], tasks: Sequence[Any]):
        """Call the wrapped function once for the batch; ``None`` entries become ``n/a`` results."""
        completions = [completion_text(c) for c in completions]
        out = self.fn(**self._kwargs(completions, tasks))
        if inspect.isawaitable(out):
            return self._finish(out, len(completions))
        return self._results(out, len(completions))

    async def _finish(self, aw, n: int) -> list:
        return self._results(await aw, n)

    def score(self, completion: str, task: Any):
        """One completion (a batch of one)."""
        out = self.score_batch([completion], [task])
        if inspect.isawaitable(out):
            return _first(out)
        return out[0]

    def __repr__(self) -> str:
        return f"from_trl({self.name})"


async def _first(aw):
    return (await aw)[0]


def from_trl(fn: Callable, name: Optional[str] = None) -> TRLRewardVerifier:
    """Wrap a TRL-style reward function ``fn(prompts, completions, **columns) -> list[float|None]``
    (sync or async, plain or conversational) as a verifier; see the module docstring."""
    return fn if isinstance(fn, TRLRewardVerifier) else TRLRewardVerifier(fn, name)

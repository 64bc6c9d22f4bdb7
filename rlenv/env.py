"""Concrete envs over a task source and a rubric: :class:`MultiTurnEnv` and its one-turn case,
:class:`SingleTurnEnv`.

A single-turn env shows the model one prompt and scores its one completion::

    import rlenv
    from verifiers.rubric import Rubric

    def exact(completion, task):
        return float(completion.strip() == task.answer)

    env = rlenv.SingleTurnEnv([rlenv.Task("2+2=?", "4")], Rubric([exact]), system_prompt="Be brief.")
    obs, info = env.reset(seed=0)            # [{"role": "system", ...}, {"role": "user", ...}]
    obs, reward, terminated, truncated, info = env.step("4")   # reward 1.0, info["scores"]

A multi-turn env overrides :meth:`MultiTurnEnv.env_response` to answer each turn (execution
feedback, a tool result) until it says the episode is done or ``max_turns`` truncates it. A
single-turn env is the case whose ``env_response`` ends the episode after the first turn.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

from verifiers.rubric import Rubric

from .core import Env, Task
from .sources import TaskSource, as_source, to_task

__all__ = ["MultiTurnEnv", "SingleTurnEnv", "format_prompt"]


def _few_shot_messages(example: Any) -> list:
    """One few-shot example as a user/assistant pair. Accepts ``(question, answer)``, a dict with
    ``prompt``/``completion``, or a :class:`Task` whose ``info["target"]`` is the ideal completion."""
    if isinstance(example, Task):
        target = example.info.get("target", example.answer)
        return example.messages() + [{"role": "assistant", "content": str(target)}]
    if isinstance(example, dict):
        if "prompt" not in example or "completion" not in example:
            raise ValueError(f"a few-shot dict needs 'prompt' and 'completion' keys, got {sorted(example)}")
        return to_task({"prompt": example["prompt"]}).messages() + [
            {"role": "assistant", "content": str(example["completion"])}]
    if isinstance(example, (list, tuple)) and len(example) == 2:
        return [{"role": "user", "content": str(example[0])}, {"role": "assistant", "content": str(example[1])}]
    raise TypeError(f"cannot read a few-shot example from {type(example).__name__}: use (question, answer), "
                    f"{{'prompt': ..., 'completion': ...}} or a Task with info['target']")


def format_prompt(task: Task, system_prompt: Optional[str] = None, few_shot: Sequence[Any] = ()) -> list:
    """The chat messages the model sees: system prompt, few-shot pairs, then the task's prompt.

    A system message already in the task's own prompt wins over ``system_prompt``.
    """
    msgs = task.messages()
    head = []
    own_system = bool(msgs) and msgs[0].get("role") == "system"
    if own_system:
        head, msgs = [msgs[0]], msgs[1:]
    elif system_prompt:
        head = [{"role": "system", "content": system_prompt}]
    for ex in few_shot or ():
        head += _few_shot_messages(ex)
    return head + msgs


class MultiTurnEnv(Env):
    """A conversation over one task: the model takes a turn, the env replies, until the env says the
    episode is done or ``max_turns`` truncates it; then the rubric scores it.

    Args:
        tasks: a task source — a list of tasks, a ``datasets.Dataset``, a generator function
            ``(rng) -> Task`` or an :class:`rlenv.sources.TaskSource`.
        rubric: a :class:`verifiers.rubric.Rubric`, or a list of verifiers (``fn(completion, task)``
            or ``(fn, weight)`` pairs) to wrap in one.
        system_prompt: prepended as a system message.
        few_shot: example pairs shown before the task (see :func:`format_prompt`).
        max_turns: the turn limit (default: the class's ``max_turns``).

    Subclasses implement :meth:`env_response`. The rubric scores the whole assistant side of the
    conversation when the episode ends (verifiers see the last assistant message by default);
    intermediate turns give reward 0. ``reset(seed=s)`` reseeds the draw, so the same seed gives the
    same task; ``options={"task": Task}`` or ``{"task_index": i}`` pins the task (how the G samples
    of a group share a prompt). The last ``step`` returns ``info`` with ``scores`` (each
    component's reward), ``failed``, ``correct``, ``turns`` and ``task``.
    """

    max_turns = 4

    def __init__(self, tasks: Any, rubric: Any, *, system_prompt: Optional[str] = None,
                 few_shot: Sequence[Any] = (), max_turns: Optional[int] = None):
        self.source: TaskSource = as_source(tasks)
        self.rubric = rubric if isinstance(rubric, Rubric) else Rubric(list(rubric))
        self.system_prompt = system_prompt
        self.few_shot = list(few_shot or ())
        if max_turns is not None:
            if max_turns < 1:
                raise ValueError(f"max_turns must be ≥ 1, got {max_turns}")
            self.max_turns = max_turns
        self.task: Optional[Task] = None
        self.task_index: Optional[int] = None
        self.history: list = []
        self.turn = 0
        self._done = True

    def preflight(self) -> None:
        """Check before the first step that the env's verifiers can run here (``Rubric.preflight``);
        ``rlenv train`` and ``rlenv eval`` call it, so a code env without a sandbox stops at once."""
        self.rubric.preflight()

    # -- episode start -------------------------------------------------------------------------
    def _draw_task(self, options: Optional[dict]) -> tuple[Optional[int], Task]:
        options = options or {}
        unknown = set(options) - {"task", "task_index"}
        if unknown:
            raise ValueError(f"reset(options=...) got unknown keys {sorted(unknown)}; "
                             f"use {{'task': Task}} or {{'task_index': int}}")
        if "task" in options:
            return None, to_task(options["task"])
        if "task_index" in options:
            i = options["task_index"]
            return i, self.source[i]
        n = self.source.size()
        i = int(self.np_random.integers(n if n is not None else 2**31))
        return i, self.source[i]

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[list, dict]:
        """Draw (or pin) a task and return ``(messages, info)``; ``info`` holds ``task`` and
        ``task_index``."""
        super().reset(seed=seed)
        self.task_index, self.task = self._draw_task(options)
        self.history = format_prompt(self.task, self.system_prompt, self.few_shot)
        self.turn = 0
        self._done = False
        return [dict(m) for m in self.history], {"task": self.task, "task_index": self.task_index}

    # -- one turn ------------------------------------------------------------------------------
    def _check_can_step(self, action: Any) -> None:
        if self._done:
            raise RuntimeError(f"{type(self).__name__}.step() called on a finished episode; call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"step() takes the completion text (str), got {type(action).__name__}")

    def _score(self, completion: Any) -> tuple[float, dict]:
        result = self.rubric.score(completion, self.task)
        info = {"scores": dict(result.components), "failed": bool(result.failed),
                "correct": result.correct, "task": self.task, "task_index": self.task_index,
                "verdicts": dict(result.verdicts), "details": dict(result.details)}
        return float(result.reward), info

    def env_response(self, messages: list, task: Task) -> tuple[Any, bool]:
        """Reply to the model's last turn. ``messages`` is the conversation so far (its last entry
        is the model's message). Returns ``(reply, done)``: ``reply`` is a string (sent as a user
        message) or a list of chat messages; ``done=True`` ends the episode (the reply is then
        ignored)."""
        raise NotImplementedError(f"{type(self).__name__} must implement env_response(messages, task)")

    def scored_completion(self) -> Any:
        """What the rubric scores when the episode ends: the assistant turns, as chat messages."""
        return [m for m in self.history if m.get("role") == "assistant"]

    def step(self, action: str) -> tuple[list, float, bool, bool, dict]:
        """Record the model's turn, ask :meth:`env_response` for a reply, score when the episode ends."""
        self._check_can_step(action)
        self.history.append({"role": "assistant", "content": action})
        self.turn += 1
        reply, done = self.env_response([dict(m) for m in self.history], self.task)
        truncated = not done and self.turn >= self.max_turns
        if done or truncated:
            self._done = True
            reward, info = self._score(self.scored_completion())
            info["turns"] = self.turn
            return [], reward, bool(done), truncated, info
        msgs = [{"role": "user", "content": reply}] if isinstance(reply, str) else [dict(m) for m in reply]
        self.history.extend(msgs)
        return msgs, 0.0, False, False, {"turns": self.turn, "task": self.task, "task_index": self.task_index}

    # -- interop: out to TRL ---------------------------------------------------------------------
    def as_dataset(self, n: Optional[int] = None) -> Any:
        """The env's tasks as a ``datasets.Dataset`` in TRL's conversational prompt format.

        Each row has ``prompt`` (the chat messages :meth:`reset` would show: system prompt and
        few-shot pairs included), ``answer``, ``task_id`` and the task's ``info`` entries as columns,
        which TRL hands back to :meth:`as_reward_function`'s function as keyword lists. ``n`` takes
        the first ``n`` tasks; it is required for an endless procedural source.
        """
        import datasets

        from verifiers.trl_compat import task_to_row

        size = self.source.size()
        if n is None and size is None:
            raise ValueError(f"{self!r}.as_dataset(): the task source is endless; pass n=<number of tasks>")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"as_dataset(n=...) must be a positive int, got {n!r}")
        count = n if size is None else min(n or size, size)
        rows = []
        for i in range(count):
            task = self.source[i]
            rows.append(task_to_row(task, format_prompt(task, self.system_prompt, self.few_shot)))
        try:
            return datasets.Dataset.from_list(rows)
        except Exception as e:  # pyarrow cannot type a column (mixed or non-data values in task.info)
            raise ValueError(f"{self!r}.as_dataset(): the task columns {sorted(rows[0])} do not fit one "
                             f"Arrow table ({type(e).__name__}: {e}); keep task.info values plain data of "
                             f"one type per key") from e

    def as_reward_function(self, name: Optional[str] = None) -> Any:
        """A TRL reward function ``fn(prompts, completions, **columns) -> list[float | None]`` that
        scores with this env's rubric; pass it to ``trl.GRPOTrainer(reward_funcs=...)`` with
        :meth:`as_dataset` as the train set. Failed scores come back as ``None`` (masked by TRL).
        ``name`` (default: the env id) names it in TRL's logs."""
        import re

        from verifiers.trl_compat import to_trl_reward

        sid = getattr(self.spec, "id", None) or type(self).__name__
        return to_trl_reward(self.rubric, name=name or re.sub(r"\W+", "_", sid).strip("_"))


class SingleTurnEnv(MultiTurnEnv):
    """One prompt, one completion, one score: the multi-turn env whose episode ends after the first
    turn. The rubric scores the completion text itself. Same arguments as :class:`MultiTurnEnv`.

    >>> env = SingleTurnEnv([Task("2+2=?", "4")], [lambda c, t: float(c.strip() == t.answer)])
    >>> env.reset(seed=0)[0]
    [{'role': 'user', 'content': '2+2=?'}]
    >>> env.step("4")[1:3]
    (1.0, True)
    """

    max_turns = 1

    def env_response(self, messages: list, task: Task) -> tuple[Any, bool]:
        """No reply: the episode ends after the model's one turn."""
        return [], True

    def scored_completion(self) -> Any:
        """The completion text of the one turn."""
        return self.history[-1]["content"]


def __getattr__(name: str):
    if name == "TaskEnv":  # PEP 562: the old name still imports, with a warning
        warnings.warn("rlenv.TaskEnv is deprecated; use rlenv.SingleTurnEnv (the same class)",
                      DeprecationWarning, stacklevel=2)
        return SingleTurnEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""TRL interoperability, both directions.

**In** — a TRL reward function works as a verifier unchanged (:mod:`verifiers.trl_in`)::

    rubric = Rubric([verifiers.from_trl(reward_len)])   # or just Rubric([reward_len])

**Out** — :func:`to_trl_reward` turns a :class:`~verifiers.rubric.Rubric` into a function TRL's
``GRPOTrainer(reward_funcs=...)`` accepts; rows made by :func:`task_to_row` carry everything needed
to rebuild the tasks on the other side.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .rubric import Rubric, score_metrics
from .trl_in import TRL_RUNTIME_KWARGS, TRLRewardVerifier, from_trl, is_trl_reward_function

__all__ = ["from_trl", "TRLRewardVerifier", "is_trl_reward_function", "to_trl_reward", "task_to_row",
           "row_to_task", "TRL_RUNTIME_KWARGS"]


# ---------------------------------------------------------------------------------------------
# out: our rubric as a TRL reward function


def task_to_row(task: Any, prompt: Optional[list] = None) -> dict:
    """A TRL data set row for ``task``: ``prompt`` (chat messages: ``prompt`` if given, e.g. with
    the env's system prompt, else the task's own), ``answer`` and the task's ``info`` columns.

    Values that are not plain data (functions, objects) cannot go through ``datasets`` and are
    dropped with their key listed in ``_dropped``.
    """
    row = {"prompt": prompt if prompt is not None else task.messages()}
    if task.answer is not None:
        row["answer"] = task.answer
    if task.id is not None:
        row["task_id"] = str(task.id)
    for k, v in (task.info or {}).items():
        if k in row or k in TRL_RUNTIME_KWARGS or k in ("completion", "completions", "prompts"):
            raise ValueError(f"task info key {k!r} collides with a name TRL uses; rename it")
        row[k] = v
    return row


def row_to_task(prompt: Any, columns: dict, i: int):
    """Rebuild the :class:`rlenv.Task` of row ``i`` from TRL's ``prompts`` and column lists."""
    from rlenv.core import Task  # the core type; rlenv.core sits below the verifiers

    info = {k: v[i] for k, v in columns.items()
            if k not in TRL_RUNTIME_KWARGS and k not in ("answer", "task_id") and isinstance(v, (list, tuple))}
    answer = columns["answer"][i] if isinstance(columns.get("answer"), (list, tuple)) else None
    tid = columns["task_id"][i] if isinstance(columns.get("task_id"), (list, tuple)) else None
    return Task(prompt=prompt, answer=answer, info=info, id=tid)


def to_trl_reward(rubric: Any, name: str = "rlenv_reward", log_components: bool = True) -> Callable:
    """A TRL reward function ``fn(prompts, completions, **kwargs) -> list[float | None]`` that scores
    with ``rubric`` (a :class:`~verifiers.rubric.Rubric` or a list of verifiers).

    Samples whose score failed (a verifier crashed or timed out) come back as ``None``, which TRL
    treats as missing rather than as a 0. When TRL passes ``log_metric``, every component's mean
    is logged as ``<name>/<component>``.
    """
    rubric = rubric if isinstance(rubric, Rubric) else Rubric(list(rubric))

    def reward(prompts, completions, **kwargs):
        tasks, seen = [], {}
        for i, p in enumerate(prompts):
            # the G completions of one prompt share one Task (what group verifiers group by)
            ans = kwargs.get("answer")
            key = (repr(p), repr(ans[i]) if isinstance(ans, (list, tuple)) else None)
            if key not in seen:
                seen[key] = row_to_task(p, kwargs, i)
            tasks.append(seen[key])
        results = rubric.score_batch(list(completions), tasks)
        log_metric = kwargs.get("log_metric")
        if log_components and callable(log_metric):
            for k, v in score_metrics(results, prefix=f"{name}/").items():
                log_metric(k, v)
        return [None if r.failed else r.reward for r in results]

    reward.__name__ = reward.__qualname__ = name
    reward.rubric = rubric
    return reward

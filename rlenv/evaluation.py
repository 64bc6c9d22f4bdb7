"""Evaluation, the one module: pass@k of a model on an env (``rlenv eval``) and the greedy pass rate
the trainers log (before and after training, every ``eval_every`` steps, the pipeline's summary).

    from rlenv.evaluation import evaluate
    result = evaluate("arithmetic-v0", "path/to/model", n=8, k=[1, 4, 8], num_tasks=50,
                      out="samples.jsonl")
    result["pass@1"], result["pass@8"], result["verifier/correct"]

pass@k uses the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code"): with ``n`` samples of which ``c`` are correct, ``pass@k = 1 - C(n-c, k) / C(n, k)``,
averaged over tasks. Whether a sample is correct is decided once, by the rollout
(``RolloutBatch.correct``: the env's ``info["correct"]``, else :func:`verifiers.base.passes` on the
reward), and read as is here, by the curriculum and by the rollout metrics.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from .engines.base import Engine, SamplingParams
from .jsonl import append_jsonl, write_jsonl_atomic

__all__ = ["pass_at_k", "evaluate", "evaluate_pass_rate", "sample_rows", "write_jsonl_atomic", "EVAL_SEED"]

#: the seed of the trainers' evaluation draws: far from any training draw, so the same model
#: always scores the same on the same tasks
EVAL_SEED = 1_000_003


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task from ``n`` samples with ``c`` correct (Chen et al. 2021, Fig. 3):
    ``1 - C(n-c, k) / C(n, k)``, computed as a product to stay exact for large ``n``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _tasks_of(env: Any, num_tasks: Optional[int], seed: int) -> list:
    """The first ``num_tasks`` tasks of the env's source (all of a finite source by default)."""
    source = getattr(getattr(env, "unwrapped", env), "source", None)
    size = source.size() if source is not None and hasattr(source, "size") else None
    if num_tasks is None:
        if size is None:
            raise ValueError(f"{env!r} has no finite task list; pass num_tasks= to say how many tasks to evaluate")
        num_tasks = size
    if size is not None:
        num_tasks = min(num_tasks, size)
    tasks = []
    for i in range(num_tasks):
        try:
            _, info = env.reset(options={"task_index": i})
        except (ValueError, KeyError, TypeError, IndexError):  # env without indexed tasks: seeded draws
            _, info = env.reset(seed=seed + i)
        if "task" not in info:
            raise ValueError(f"{env!r}.reset() returned no info['task']; evaluation needs it to pin tasks")
        tasks.append(info["task"])
    return tasks


def _engine_for(model: Any, engine: Union[str, Engine], tokenizer: Any, engine_kwargs: dict) -> Engine:
    if isinstance(engine, Engine):
        return engine
    if isinstance(model, Engine):
        return model
    from .engines import make_engine

    if isinstance(model, (str, os.PathLike)):
        from .models.tiny import resolve_model_path

        model = resolve_model_path(str(model))
    return make_engine(engine, model=model, tokenizer=tokenizer, **engine_kwargs)


def evaluate(env: Any, model: Any, *, n: int = 1, k: Union[int, Sequence[int]] = 1,
             num_tasks: Optional[int] = None, out: Optional[Union[str, os.PathLike]] = None,
             temperature: Optional[float] = None, top_p: float = 1.0, top_k: int = 0, max_new_tokens: int = 256,
             stop: Sequence[str] = (), seed: int = 0, engine: Union[str, Engine] = "hf", tokenizer: Any = None,
             tasks_per_batch: int = 32, max_turns: Optional[int] = None, **engine_kwargs) -> dict:
    """Sample ``n`` completions of each task and score them with the env's verifiers.

    Args:
        env: an env id (``"arithmetic-v0"``) or an env instance.
        model: a checkpoint path (or ``preset:tiny``), a model object (with ``tokenizer=``) or an Engine.
        n: samples per task; ``k``: the k (or list of k, each ≤ n) to report pass@k for.
        num_tasks: how many tasks (default: all of a finite task list).
        out: where to write one JSON line per sample (atomically).
        temperature: default 0 (greedy) when ``n == 1``, else 1.0.

    Returns a dict: ``pass@{k}`` for each k, ``reward_mean``, ``verifier/<name>`` means,
    ``failed_rate``, ``truncation_rate``, ``gen_tokens_per_s``, ``num_tasks``, ``n`` and
    ``samples_path`` (when ``out`` is given).
    """
    from .rollout import collect_rollouts

    ks = [k] if isinstance(k, int) else list(k)
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    bad = [x for x in ks if not 1 <= x <= n]
    if bad:
        raise ValueError(f"every k must be between 1 and n={n}; got k={bad} (raise n to report pass@{max(bad)})")
    env_id = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", type(env).__name__)
    if isinstance(env, str):
        from .registry import make

        env = make(env)
    getattr(env, "preflight", lambda: None)()  # e.g. a code env without a sandbox: stop before any sampling
    eng = _engine_for(model, engine, tokenizer, engine_kwargs)
    sampling = SamplingParams(temperature=(0.0 if n == 1 else 1.0) if temperature is None else temperature,
                              top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, stop=tuple(stop), seed=seed)
    tasks = _tasks_of(env, num_tasks, seed)
    if not tasks:
        raise ValueError(f"{env_id} produced no tasks to evaluate")

    rows, per_task, components, tok_rates = [], [], {}, []
    for start in range(0, len(tasks), max(1, tasks_per_batch)):
        chunk = tasks[start:start + tasks_per_batch]
        batch = collect_rollouts(env, eng, chunk, group_size=n, sampling=sampling, max_turns=max_turns)
        correct = batch.correct.tolist()
        tok_rates.append(batch.metrics["gen_tokens_per_s"])
        for name, values in batch.reward_components.items():
            components.setdefault(name, []).extend(values.tolist())
        for g in range(len(chunk)):
            per_task.append(sum(correct[g * n:(g + 1) * n]))
        rows += sample_rows(batch, task_offset=start)
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    result: dict = {"env": env_id, "model": model_name, "num_tasks": len(tasks), "n": n}
    for x in ks:
        result[f"pass@{x}"] = float(np.mean([pass_at_k(n, c, x) for c in per_task]))
    result["reward_mean"] = float(np.mean([r["reward"] for r in rows]))
    for name, values in components.items():
        result[f"verifier/{name}"] = float(np.mean(values))
    result["failed_rate"] = float(np.mean([r["failed"] for r in rows]))
    result["truncation_rate"] = float(np.mean([r["truncated"] for r in rows]))
    result["gen_tokens_per_s"] = float(np.mean(tok_rates))
    if out is not None:
        result["samples_path"] = str(write_jsonl_atomic(out, rows))
    return result


def sample_rows(batch: Any, task_offset: int = 0) -> list:
    """One record per row of a rollout: task, completion, reward, ``correct`` (the rollout's
    verdict), each verifier's score, failed/truncated and the completion's length in tokens."""
    rows = []
    for b in range(len(batch)):
        task = batch.tasks[b]
        rows.append({
            "task_index": task_offset + int(batch.group_ids[b]), "task_id": getattr(task, "id", None),
            "prompt": getattr(task, "prompt", task), "answer": getattr(task, "answer", None),
            "completion": batch.texts[b] if batch.texts else None, "reward": float(batch.rewards[b]),
            "correct": bool(batch.correct[b]),
            "scores": {name: float(v[b]) for name, v in batch.reward_components.items()},
            "failed": bool(batch.failed[b]), "truncated": bool(batch.truncated[b]),
            "completion_tokens": int(batch.completion_lengths[b]),
        })
    return rows


def evaluate_pass_rate(model: Any, tokenizer: Any, env: Any, *, num_tasks: int = 64, max_new_tokens: int = 64,
                       batch_size: int = 64, seed: int = EVAL_SEED,
                       samples_path: Optional[Union[str, os.PathLike]] = None, step: int = 0) -> dict:
    """Greedy-decode ``num_tasks`` tasks drawn from ``env`` (seeded draws) with the HF engine on a
    model object, and score them with the env's verifiers — the trainers' evaluation.

    Returns ``{"pass_rate", "reward", "format", "completion_len", "truncation_rate"}`` (``format``
    when the env logs a ``format`` component; ``truncation_rate``: the share cut at
    ``max_new_tokens``). With ``samples_path`` each sample (:func:`sample_rows` plus ``step``) is
    appended there as one jsonl line.
    """
    from .engines.hf import HFEngine
    from .rollout import collect_rollouts

    engine = HFEngine(model, tokenizer, max_batch_size=batch_size)
    try:
        # explicit sampling seed: evaluation must not consume the global RNG (exact resume)
        batch = collect_rollouts(env, engine, num_tasks, group_size=1,
                                 sampling=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed),
                                 seed=seed)
    finally:
        engine.close()
    out = {"pass_rate": float(batch.correct.float().mean()), "reward": float(batch.rewards.mean()),
           "completion_len": float(batch.completion_lengths.float().mean()),
           "truncation_rate": float(batch.truncated.float().mean())}
    if "format" in batch.reward_components:
        out["format"] = float(batch.reward_components["format"].float().mean())
    if samples_path is not None:
        append_jsonl(samples_path, [{"step": step, **row} for row in sample_rows(batch)])
    return out

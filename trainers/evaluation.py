"""Pass-rate evaluation of a model on an env's verifiers (greedy, the default HF engine).

Used by every trainer before/after training (and every ``eval_every`` steps) and by the stage
pipeline's summary table. Tasks are drawn from the env with a fixed seed far from the training
draws, so the same model always scores the same.
"""

from __future__ import annotations

import os
from typing import Any, Optional

EVAL_SEED = 1_000_003


def evaluate_pass_rate(model: Any, tokenizer: Any, env: Any, *, num_tasks: int = 64, max_new_tokens: int = 64,
                       batch_size: int = 64, seed: int = EVAL_SEED,
                       samples_path: Optional[str | os.PathLike] = None, step: int = 0) -> dict:
    """Greedy-decode ``num_tasks`` tasks of ``env`` and score them with its verifiers.

    Returns ``{"pass_rate", "reward", "format", "completion_len", "truncation_rate"}`` (``format``
    when the env logs a ``format`` component; ``truncation_rate``: the share cut at
    ``max_new_tokens``). With ``samples_path`` each sample is appended there as one jsonl line
    (step, task id, prompt, completion, reward, correct).
    """
    from rlenv.engines.base import SamplingParams
    from rlenv.engines.hf import HFEngine
    from rlenv.rollout import collect_rollouts

    from .metrics_log import append_jsonl

    engine = HFEngine(model, tokenizer, max_batch_size=batch_size)
    try:
        # explicit sampling seed: evaluation must not consume the global RNG (exact resume)
        batch = collect_rollouts(env, engine, num_tasks, group_size=1,
                                 sampling=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed),
                                 seed=seed)
    finally:
        engine.close()
    correct = batch.correct if batch.correct is not None else batch.rewards > 0
    out = {"pass_rate": float(correct.float().mean()), "reward": float(batch.rewards.mean()),
           "completion_len": float(batch.completion_lengths.float().mean()),
           "truncation_rate": float(batch.truncated.float().mean())}
    if "format" in batch.reward_components:
        out["format"] = float(batch.reward_components["format"].float().mean())
    if samples_path is not None:
        records = []
        for i, task in enumerate(batch.tasks):
            records.append({"step": step, "task_id": getattr(task, "id", None),
                            "prompt": getattr(task, "prompt", None), "completion": batch.texts[i] if batch.texts else None,
                            "reward": float(batch.rewards[i]), "correct": bool(correct[i])})
        append_jsonl(samples_path, records)
    return out

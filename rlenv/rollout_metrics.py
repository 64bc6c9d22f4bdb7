"""The per-rollout metrics stored in ``RolloutBatch.metrics`` (flat ``name -> float``, ready to log)."""

from __future__ import annotations

from typing import Any

import torch


def rollout_metrics(batch: Any, trajectories: list, stats: dict, wall_time: float) -> dict:
    """Metrics of one rollout.

    Keys: ``gen_tokens_per_s`` (generated tokens over time inside the engine), ``reward_mean``,
    ``reward_std``, ``pass_rate`` (share of rows the rollout judged correct, ``batch.correct``), ``verifier/<name>`` (mean of each component), ``completion_len_mean``
    / ``_std`` / ``_min`` / ``_max``, ``truncation_rate``, ``zero_variance_group_frac`` (groups
    whose rewards are all equal — no GRPO signal), ``failed_verifier_count`` and, per failing
    component and kind, ``verifier_failures/<name>/<kind>`` (``timeout``, ``exception``, … ;
    ``env/exception`` when the env's step itself raised), ``turns_mean``,
    ``rollout_time_s``, ``generation_time_s`` and ``verify_wait_s`` (time the engine sat idle
    waiting for verifiers).
    """
    rewards = batch.rewards.float()
    lengths = batch.completion_lengths.float()
    correct = batch.correct
    groups = batch.group_ids
    zero_var = []
    for g in groups.unique():
        r = rewards[groups == g]
        zero_var.append(float(bool((r.max() - r.min()).abs() < 1e-8)))
    m = {
        "gen_tokens_per_s": stats["gen_tokens"] / max(stats["gen_time"], 1e-9),
        "generated_tokens": float(stats["gen_tokens"]),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "pass_rate": float(correct.float().mean()),
        "completion_len_mean": float(lengths.mean()),
        "completion_len_std": float(lengths.std(unbiased=False)),
        "completion_len_min": float(lengths.min()),
        "completion_len_max": float(lengths.max()),
        "truncation_rate": float(batch.truncated.float().mean()),
        "zero_variance_group_frac": sum(zero_var) / max(len(zero_var), 1),
        "failed_verifier_count": float(batch.failed.sum()),
        "turns_mean": float(torch.tensor([float(t.turns) for t in trajectories]).mean()),
        "rollout_time_s": wall_time,
        "generation_time_s": stats["gen_time"],
        "verify_wait_s": stats["wait_time"],
    }
    for name, values in batch.reward_components.items():
        m[f"verifier/{name}"] = float(values.float().mean())
    for t in trajectories:
        for key, n in getattr(t, "failures", {}).items():
            m[f"verifier_failures/{key}"] = m.get(f"verifier_failures/{key}", 0.0) + n
    return m

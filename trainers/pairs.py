"""Preference pairs from an env's verifier: correct vs incorrect samples of the current model.

The DPO and reward-model stages of a spec need pairs; with a verifiable task they come for free:
sample ``samples_per_prompt`` completions of each prompt with the current model, score them with the
env's verifiers and pair a correct one (chosen) with an incorrect one (rejected).

    from trainers.pairs import verifier_pairs
    pairs = verifier_pairs("runs/sft/model", "arithmetic-v0", num_prompts=512)
    DPOTrainer("runs/sft/model", DPOConfig(...), train_dataset=pairs).train()
"""

from __future__ import annotations

from typing import Any, Optional


def verifier_pairs(model: Any, env: Any, *, tokenizer: Any = None, num_prompts: int = 256,
                   samples_per_prompt: int = 8, pairs_per_prompt: int = 1, max_new_tokens: int = 64,
                   temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 256,
                   fallback_to_target: bool = False) -> list[dict]:
    """Sample, verify and pair.

    Args:
        model: a model object (with ``tokenizer=``), a path, a hub id or ``preset:tiny``.
        env: an env id or an :class:`rlenv.Env`; its verifiers decide correct vs incorrect.
        num_prompts: prompts drawn from the env (seeded by ``seed``).
        samples_per_prompt: completions sampled per prompt (≥ 2).
        pairs_per_prompt: at most this many (chosen, rejected) pairs per prompt, each using
            different completions.
        fallback_to_target: a prompt with no correct sample is paired with ``task.info["target"]``
            (the ideal completion) as chosen, when the task has one and the verifier accepts it.

    Returns rows ``{"prompt": messages, "chosen": str, "rejected": str, "task_id": ...}``, ready for
    :class:`~trainers.dpo.DPOTrainer` and :class:`~trainers.reward.RewardTrainer` (a list works
    as is; ``datasets.Dataset.from_list`` makes a Dataset).
    """
    import rlenv
    from rlenv.engines.base import SamplingParams
    from rlenv.engines.hf import HFEngine
    from rlenv.rollout import collect_rollouts

    from .modeling import load_model

    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be ≥ 2 to form pairs, got {samples_per_prompt}")
    if isinstance(env, str):
        env = rlenv.make(env)
    model, tokenizer = load_model(model, tokenizer=tokenizer)
    engine = HFEngine(model, tokenizer, max_batch_size=batch_size)
    try:
        batch = collect_rollouts(env, engine, num_prompts, group_size=samples_per_prompt,
                                 sampling=SamplingParams(temperature=temperature, top_p=top_p,
                                                         max_new_tokens=max_new_tokens, seed=seed), seed=seed)
    finally:
        engine.close()
    groups: dict = {}
    for i, g in enumerate(batch.group_ids.tolist()):
        groups.setdefault(g, []).append(i)
    pairs = []
    for g, rows in sorted(groups.items()):
        task = batch.tasks[rows[0]]
        good = _unique([batch.texts[i] for i in rows if bool(batch.correct[i]) and not bool(batch.failed[i])])
        bad = _unique([batch.texts[i] for i in rows if not bool(batch.correct[i]) and not bool(batch.failed[i])])
        if not good and fallback_to_target and getattr(task, "info", {}).get("target") is not None:
            good = _verified(env, task, str(task.info["target"]))  # a target may be wrong (noisy labels)
        if not good or not bad:
            continue
        prompt, _ = env.reset(options={"task": task})
        for chosen, rejected in list(zip(good, bad))[:pairs_per_prompt]:
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "task_id": getattr(task, "id", None)})
    return pairs


def _verified(env: Any, task: Any, text: str) -> list:
    """``[text]`` when the env's verifier judges it correct for ``task``, else ``[]``."""
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(text)
    ok = info.get("correct")
    return [text] if (ok if ok is not None else reward > 0) and not info.get("failed") else []


def _unique(texts: list) -> list:
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def pair_stats(pairs: list[dict], num_prompts: Optional[int] = None) -> dict:
    """Counts for logs: pairs and (when given) the fraction of prompts that yielded one."""
    out = {"pairs": len(pairs)}
    if num_prompts:
        out["prompt_yield"] = len({p.get("task_id") for p in pairs}) / num_prompts
    return out

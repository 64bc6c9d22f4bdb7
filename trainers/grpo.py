"""GRPO and its variants (Dr. GRPO, DAPO, RLOO, REINFORCE++, GSPO, CISPO), picked by config names.

Ten lines to start::

    from trainers import GRPOTrainer, GRPOConfig

    trainer = GRPOTrainer(model="preset:tiny", env="arithmetic-v0",
                          config=GRPOConfig(output_dir="runs/grpo", max_steps=50, learning_rate=3e-5,
                                            num_prompts_per_step=8, group_size=8, max_new_tokens=16))
    trainer.train()

Verifier functions can be passed directly (``verifiers=[fn, (fn2, 0.5)]``); they replace the env's
rubric. One step: draw ``num_prompts_per_step`` prompts, sample ``group_size`` completions each,
score them, (dynamic sampling: drop groups whose rewards are all equal and sample more prompts, at
most ``max_resample_rounds`` times), compute group advantages, then ``num_iterations`` (μ) passes
over the rollout in mini-batches. With μ = 1 and one mini-batch there is no second forward: π_old is
the current log-prob, detached. The reference model exists only when ``beta > 0`` and runs once per
rollout.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from rlenv.batch import RolloutBatch

from .advantages import get_advantage
from .config import GRPOConfig
from .losses import (aggregate, get_aggregation, get_policy_loss, kl_loss_term, masked_mean,
                     truncated_importance_weights)
from .online import (OnlineTrainer, StepData, informative_groups,
                     micro_batches_by_length, policy_logprobs, shape_rewards)
from .registry import bind_options


class GRPOTrainer(OnlineTrainer):
    """Group Relative Policy Optimisation on the shared loop (see the module docstring)."""

    config_class = GRPOConfig

    def needs_reference(self) -> bool:
        return self.config.beta > 0

    # -- sizes -----------------------------------------------------------------------------------
    def _rows_per_step(self) -> int:
        return self.config.num_prompts_per_step * self.config.group_size

    def _mini_batches(self) -> int:
        mbs = self.config.mini_batch_size
        return 1 if not mbs else max(1, math.ceil(self._rows_per_step() / mbs))

    def updates_per_step(self) -> int:
        return self.config.num_iterations * self._mini_batches()

    # -- rollout ---------------------------------------------------------------------------------
    def _scored_rollout(self, n_prompts: int, round_: int, group_offset: int):
        batch = self.rollout(n_prompts, round_)
        batch.group_ids = batch.group_ids + group_offset  # unique across refill rounds
        c = self.config
        rewards, valid = shape_rewards(batch, max_new_tokens=c.max_new_tokens, mask_truncated=c.mask_truncated,
                                       overlong_buffer=c.overlong_buffer, overlong_penalty_value=c.overlong_penalty)
        return batch, rewards, valid

    def _dynamic_sample(self, first) -> tuple:
        """Keep the groups with a reward spread; refill from fresh prompts until the step has
        ``num_prompts_per_step`` of them or the rounds run out."""
        c = self.config
        want = c.num_prompts_per_step
        parts, kept_groups, rounds, offset = [], 0, 0, 0
        current = first
        while True:
            batch, rewards, valid = current
            keep = informative_groups(rewards, batch.group_ids, valid)
            groups = batch.group_ids[keep].unique().tolist()[: want - kept_groups]
            rows = torch.isin(batch.group_ids, torch.tensor(groups, dtype=torch.long))
            if groups:
                parts.append((batch.select(rows), rewards[rows], valid[rows]))
            kept_groups += len(groups)
            offset += len(batch)
            if kept_groups >= want or rounds >= c.max_resample_rounds:
                break
            rounds += 1
            # sample a little more than missing: a share of the new groups will be uninformative too
            current = self._scored_rollout(min(2 * (want - kept_groups), 4 * want), rounds, offset)
        if not parts:  # nothing informative at all: train on the first batch (zero advantages, KL only)
            parts = [first]
        pad = self.tokenizer.pad_token_id or 0
        batch = RolloutBatch.concat([p[0] for p in parts], pad_token_id=pad)
        return (batch, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]),
                {"dynamic/rounds": float(rounds), "dynamic/kept_groups": float(kept_groups)})

    def make_step_data(self) -> StepData:
        c = self.config
        first = self._scored_rollout(c.num_prompts_per_step, 0, 0)
        metrics = dict(first[0].metrics)
        if c.dynamic_sampling:
            batch, rewards, valid, extra = self._dynamic_sample(first)
            metrics.update(extra)
        else:
            batch, rewards, valid = first
        t0 = time.perf_counter()
        estimator = get_advantage(c.advantage_estimator)
        advantages = estimator(rewards, batch.group_ids, valid, **bind_options(estimator, c, c.advantage_kwargs))
        mask = batch.loss_mask * valid[:, None].float()
        per_token = {"mask": mask, "sampling_logprobs": batch.sampling_logprobs}
        lengths = batch.attention_mask.sum(-1)
        gen = torch.Generator().manual_seed(self._seed(63))
        gas = c.gradient_accumulation_steps
        denominator = get_aggregation(c.loss_agg).denominator
        chunks, normalizers = [], []
        for _ in range(c.num_iterations):
            order = torch.randperm(len(batch), generator=gen)
            for mini in torch.tensor_split(order, self._mini_batches()):
                total = float(denominator(mask[mini], c.max_new_tokens))
                for rows in micro_batches_by_length(lengths, mini, gas):
                    chunks.append(rows)
                    # accelerate divides each micro-batch loss by gas; the shared denominator undoes it
                    normalizers.append(max(total, 1.0) / gas)
        first_pass = chunks[: len(chunks) // c.num_iterations]
        if self.updates_per_step() > 1:  # π_old differs from the current policy after the first update
            per_token["old_logprobs"] = self.score_logprobs(self.model, batch, first_pass)
        if c.beta > 0:
            per_token["ref_logprobs"] = self.score_logprobs(self.ref, batch, first_pass)
        self.timing["prep_s"] = time.perf_counter() - t0
        metrics.update({"reward": float(rewards[valid].mean()) if valid.any() else 0.0,
                        "advantage_abs_mean": float(advantages.abs().mean()),
                        "valid_frac": float(valid.float().mean()), "train_rows": float(len(batch))})
        per_row = {"advantages": advantages, "group_ids": batch.group_ids, "prompt_lengths": batch.prompt_lengths}
        return StepData(batch, per_token, per_row, chunks, normalizers, metrics)

    # -- loop hooks ------------------------------------------------------------------------------
    def compute_loss(self, model: Any, mb: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        if len(mb["rows"]) == 0:  # an empty micro-batch (fewer rows than micro-batches): no gradient
            return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad), {}
        mask = mb["mask"]
        # the G rows of a group share their prompt: it is forwarded once (see policy_logprobs)
        logp, entropy = policy_logprobs(model, mb, c.temperature, with_entropy=True)
        old = mb.get("old_logprobs")
        old = logp.detach() if old is None else old
        policy_loss = get_policy_loss(c.policy_loss)
        per_token, stats = policy_loss(logp, old, mb["advantages"], mask,
                                       **bind_options(policy_loss, c, c.policy_loss_kwargs))
        metrics = {k: float(v) for k, v in stats.items()}
        if c.tis != "none":  # engine ≠ trainer numerics: reweight by π_old_trainer / π_sampler
            w = truncated_importance_weights(old, mb["sampling_logprobs"], mask, c.tis, c.tis_mode, c.tis_cap)
            per_token = per_token * w
            metrics["tis_weight_mean"] = float(masked_mean(w.expand_as(mask), mask))
        if c.beta > 0:
            kl = kl_loss_term(logp, mb["ref_logprobs"], old, c.kl_estimator)
            per_token = per_token + c.beta * kl
            metrics["kl"] = float(masked_mean(kl.detach(), mask))
        loss = aggregate(per_token, mask, c.loss_agg, max_length=c.max_new_tokens, normalizer=mb["normalizer"])
        metrics["entropy"] = float(masked_mean(entropy, mask))
        metrics["policy_loss"] = float(loss.detach()) * c.gradient_accumulation_steps
        return loss, metrics

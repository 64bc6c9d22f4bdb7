"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022), with verifiable rewards.

The policy carries a **value head** (one linear layer on the last hidden state, trained through the
shared trunk, scaled by ``vf_coef``). One step:

1. sample ``group_size`` completions of ``num_prompts_per_step`` prompts and score them with the
   env's rubric — which, when ``reward_model`` is set, also holds a learned reward model
   (:class:`verifiers.reward_model.RewardModelVerifier`, component ``reward_model``) weighted by
   ``reward_model_weight``;
2. one no-grad pass for π_old and V_old, one for π_ref;
3. per-token rewards ``-β·KL_t`` plus the score on the last token (β fixed, or adaptive: Ziegler's
   controller), GAE (γ, λ) → advantages (whitened) and returns;
4. ``ppo_epochs`` passes in mini-batches: clipped surrogate + ``vf_coef`` × clipped value loss.

    trainer = PPOTrainer(model="preset:tiny", env="arithmetic-v0", config=PPOConfig(max_steps=50))
    trainer.train()
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from .advantages import gae
from .config import PPOConfig
from .losses import (AdaptiveKLController, FixedKLController, aggregate, clipped_surrogate_loss,
                     clipped_value_loss, get_kl, kl_shaped_rewards, masked_mean, masked_whiten,
                     selective_log_softmax, entropy_from_logits)
from .online import OnlineTrainer, StepData, gather_rows, micro_batches_by_length, shape_rewards


class ValueHead(torch.nn.Module):
    """``V(s_t)`` from the policy's last hidden state: one linear layer, zero-initialised so the
    first advantages are the plain returns."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1).float()


def policy_and_value(model: Any, value_head: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     start: int, temperature: float = 1.0, with_entropy: bool = False):
    """One forward: log-probs ``[B, T-start]`` of ``input_ids[:, start:]``, the value of the state each
    was generated from (same shape) and optionally the entropy."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    keep = input_ids.shape[1] - start + 1
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, logits_to_keep=keep, output_hidden_states=True)
    logits = out.logits[:, -keep:-1]
    if temperature != 1.0:
        logits = logits / temperature
    logp = selective_log_softmax(logits, input_ids[:, start:])
    values = value_head(out.hidden_states[-1][:, start - 1:-1])
    return logp, values, (entropy_from_logits(logits.detach()) if with_entropy else None)


class PPOTrainer(OnlineTrainer):
    """PPO with a value head, GAE, value clipping and the KL penalty in the reward."""

    config_class = PPOConfig

    def needs_reference(self) -> bool:
        return self.config.kl_coef > 0 or self.config.adaptive_kl

    def setup(self) -> None:
        c = self.config
        hidden = self.model.config.hidden_size
        self.add_module("value_head", ValueHead(hidden), learning_rate=c.value_learning_rate)
        self.kl_ctl = (AdaptiveKLController(c.kl_coef, c.kl_target, c.kl_horizon) if c.adaptive_kl
                       else FixedKLController(c.kl_coef))
        if c.reward_model:
            from verifiers.reward_model import RewardModelVerifier
            from verifiers.rubric import Component

            self.add_to_rubric([Component(RewardModelVerifier(c.reward_model), c.reward_model_weight,
                                          name="reward_model")])

    def _mini_batches(self) -> int:
        c = self.config
        rows = c.num_prompts_per_step * c.group_size
        return 1 if not c.mini_batch_size else max(1, math.ceil(rows / c.mini_batch_size))

    def updates_per_step(self) -> int:
        return self.config.ppo_epochs * self._mini_batches()

    @torch.no_grad()
    def _old_pass(self, batch, chunks):
        """π_old, V_old and π_ref of every row, ``[B, T]`` aligned with ``input_ids``."""
        shape = batch.input_ids.shape
        old, values = torch.zeros(shape), torch.zeros(shape)
        for rows in chunks:
            mb = gather_rows(batch, rows, {}, {})
            ids, attn = mb["input_ids"].to(self.device), mb["attention_mask"].to(self.device)
            lp, v, _ = policy_and_value(self.model, self.extra_modules["value_head"], ids, attn, mb["start"],
                                        self.config.temperature)
            sl = slice(mb["start"], mb["start"] + lp.shape[1])
            old[rows, sl], values[rows, sl] = lp.float().cpu(), v.float().cpu()
        ref = self.score_logprobs(self.ref, batch, chunks) if self.ref is not None else old.clone()
        return old, values, ref

    def make_step_data(self) -> StepData:
        c = self.config
        batch = self.rollout(c.num_prompts_per_step)
        metrics = dict(batch.metrics)
        t0 = time.perf_counter()
        scores, valid = shape_rewards(batch, max_new_tokens=c.max_new_tokens)
        if "reward_model" in batch.reward_components:
            metrics["reward_model_score"] = float(batch.reward_components["reward_model"].mean())
        mask = batch.loss_mask * valid[:, None].float()
        lengths = batch.attention_mask.sum(-1)
        gas = c.gradient_accumulation_steps
        all_rows = torch.arange(len(batch))
        old, values, ref = self._old_pass(batch, micro_batches_by_length(lengths, all_rows, gas))
        token_rewards, kl = kl_shaped_rewards(scores, old, ref, mask, self.kl_ctl.value, c.kl_estimator)
        advantages, returns = gae(token_rewards, values * mask, mask, c.gamma, c.gae_lambda)
        advantages = masked_whiten(advantages, mask) * mask
        seq_kl = float((kl.sum(-1)).mean())
        metrics.update({"reward": float(scores[valid].mean()) if valid.any() else 0.0, "kl": seq_kl,
                        "kl_coef": self.kl_ctl.value, "value_mean": float(masked_mean(values, mask)),
                        "return_mean": float(masked_mean(returns, mask))})
        self.kl_ctl.update(seq_kl, len(batch))
        gen = torch.Generator().manual_seed(self._seed(63))
        chunks, normalizers = [], []
        for _ in range(c.ppo_epochs):
            order = torch.randperm(len(batch), generator=gen)
            for mini in torch.tensor_split(order, self._mini_batches()):
                total = max(float(mask[mini].sum()), 1.0)
                for rows in micro_batches_by_length(lengths, mini, gas):
                    chunks.append(rows)
                    normalizers.append(total / gas)
        per_token = {"mask": mask, "old_logprobs": old, "old_values": values, "advantages": advantages,
                     "returns": returns}
        self.timing["prep_s"] = time.perf_counter() - t0
        return StepData(batch, per_token, {}, chunks, normalizers, metrics)

    def compute_loss(self, model: Any, mb: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        head = self.extra_modules["value_head"]
        if len(mb["rows"]) == 0:
            params = [p for m in (model, head) for p in m.parameters() if p.requires_grad]
            return sum(p.sum() * 0.0 for p in params), {}
        mask = mb["mask"]
        logp, values, entropy = policy_and_value(model, head, mb["input_ids"], mb["attention_mask"], mb["start"],
                                                 c.temperature, with_entropy=True)
        per_token, stats = clipped_surrogate_loss(logp, mb["old_logprobs"], mb["advantages"], mask,
                                                  epsilon_low=c.cliprange, epsilon_high=c.cliprange)
        pg_loss = aggregate(per_token, mask, "token-mean", normalizer=mb["normalizer"])
        # the value loss shares the policy loss's token denominator (a token mean over the update)
        share = mask.sum().clamp(min=1) / mb["normalizer"]
        vf_loss, vstats = clipped_value_loss(values, mb["old_values"], mb["returns"], mask, c.cliprange_value)
        loss = pg_loss + c.vf_coef * vf_loss * share
        metrics = {k: float(v) for k, v in {**stats, **vstats}.items()}
        metrics.update({"policy_loss": float(pg_loss.detach()), "value_loss": float(vf_loss.detach()),
                        "entropy": float(masked_mean(entropy, mask)),
                        "approx_kl": float(masked_mean(get_kl("k3")(logp.detach(), mb["old_logprobs"]), mask))})
        return loss, metrics

    def data_state(self) -> dict:
        return {**super().data_state(), "kl_ctl": self.kl_ctl.state_dict()}  # + curriculum level, if any

    def load_data_state(self, state: dict) -> None:
        super().load_data_state(state)
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])

"""Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback"):
on-policy preference pairs ranked by verifiers or a reward model.

One step: sample ``group_size`` (≥ 2) completions of each of ``num_prompts_per_step`` prompts from
the current policy, score them with the env's rubric (with ``rank_by="reward_model"`` the rubric's
reward is the ``reward_model``'s score and the env's verifiers stay on as logged metrics),
pair the best with the worst of each group (groups whose best and worst tie are skipped: no
preference), and take one DPO update on those pairs against the reference model — the same
:func:`trainers.losses_pref.dpo_loss` offline DPO uses.

    trainer = OnlineDPOTrainer(model="preset:tiny", env="arithmetic-v0",
                               config=OnlineDPOConfig(group_size=4, max_steps=50))
    trainer.train()
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .config import OnlineDPOConfig
from .losses import masked_sum
from .losses_pref import dpo_loss, dpo_options
from .online import OnlineTrainer, StepData, completion_logprobs, shape_rewards


def best_worst_pairs(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
                     tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen_rows, rejected_rows)``: per group the highest- and lowest-reward valid rows; groups
    whose best and worst tie (within ``tol``) give no pair. The first row wins ties within a rank."""
    chosen, rejected = [], []
    for g in group_ids.unique(sorted=True):
        rows = ((group_ids == g) & valid).nonzero(as_tuple=True)[0]
        if len(rows) < 2:
            continue
        r = rewards[rows]
        best, worst = rows[int(torch.argmax(r))], rows[int(torch.argmin(r))]
        if float(rewards[best] - rewards[worst]) > tol:
            chosen.append(int(best))
            rejected.append(int(worst))
    return torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long)


class OnlineDPOTrainer(OnlineTrainer):
    """Online DPO on the shared loop (see the module docstring)."""

    config_class = OnlineDPOConfig

    def needs_reference(self) -> bool:
        return True

    def setup(self) -> None:
        if self.config.rank_by == "reward_model":
            from verifiers.reward_model import RewardModelVerifier
            from verifiers.rubric import Component

            if not self.config.reward_model:
                raise ValueError("OnlineDPOConfig.reward_model must be a path when rank_by='reward_model' (in a "
                                 "spec, or an rm stage before this one), got None")
            self.add_to_rubric([Component(RewardModelVerifier(self.config.reward_model), 1.0, name="reward_model")],
                               others_weight=0.0)

    def make_step_data(self) -> StepData:
        c = self.config
        batch = self.rollout(c.num_prompts_per_step)
        metrics = dict(batch.metrics)
        t0 = time.perf_counter()
        scores, valid = shape_rewards(batch, max_new_tokens=c.max_new_tokens)
        chosen, rejected = best_worst_pairs(scores, batch.group_ids, valid)
        n_groups = int(batch.group_ids.unique().numel())
        gas = c.gradient_accumulation_steps
        pair_chunks = torch.tensor_split(torch.arange(len(chosen)), gas)
        # each micro-batch holds its pairs' chosen rows, then their rejected rows
        chunks = [torch.cat([chosen[p], rejected[p]]) for p in pair_chunks]
        per_token = {"mask": batch.loss_mask}
        per_token["ref_logprobs"] = self.score_logprobs(self.ref, batch, [ch for ch in chunks if len(ch)])
        self.timing["prep_s"] = time.perf_counter() - t0
        metrics.update({"reward": float(scores[valid].mean()) if valid.any() else 0.0, "pairs": float(len(chosen)),
                        "tie_group_frac": 1.0 - len(chosen) / max(n_groups, 1)})
        normalizers = [max(len(chosen), 1) / gas] * gas
        return StepData(batch, per_token, {}, chunks, normalizers, metrics)

    def compute_loss(self, model: Any, mb: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        if len(mb["rows"]) == 0:  # no pairs (all groups tied): no gradient this micro-batch
            return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad), {}
        mask = mb["mask"]
        logp, _ = completion_logprobs(model, mb["input_ids"], mb["attention_mask"], mb["start"], c.temperature)
        seq = masked_sum(logp, mask, -1)
        ref = masked_sum(mb["ref_logprobs"], mask, -1)
        lengths = mask.sum(-1)
        n = seq.shape[0] // 2
        losses, r_c, r_r = dpo_loss(seq[:n], seq[n:], ref[:n], ref[n:], chosen_lengths=lengths[:n],
                                    rejected_lengths=lengths[n:], **dpo_options(c))
        loss = losses.sum() / mb["normalizer"]
        return loss, {"dpo_loss": float(losses.detach().mean()), "reward_margin": float((r_c - r_r).mean()),
                      "reward_accuracy": float((r_c > r_r).float().mean())}

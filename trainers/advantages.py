"""Advantage estimators as small pure tensor functions, chosen by name.

Outcome estimators take one scalar reward per sampled completion and the id of the prompt (group) it
was sampled for, and return one advantage per completion::

    fn(rewards [B], group_ids [B], valid=None [B] bool, *, option=default, ...) -> advantages [B]

Rows with ``valid`` False (a verifier failed) neither enter the group statistics nor get an
advantage (0). Groups may have different sizes. They are registered by name in :data:`ADVANTAGES`
(the only list of the names ``GRPOConfig.advantage_estimator`` accepts); the keyword-only parameters
are options, set with ``GRPOConfig.advantage_kwargs`` (see :mod:`trainers.registry`).
:func:`gae` works per token for PPO instead (not chosen by name)::

    gae(token_rewards [B, T], values [B, T], mask [B, T], gamma, lam) -> (advantages, returns)

References: GRPO (Shao et al. 2024, DeepSeekMath), Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-
like training"), RLOO (Ahmadian et al. 2024), REINFORCE++ (Hu 2025), GAE (Schulman et al. 2016).
"""

from __future__ import annotations

from typing import Optional

import torch

from .losses import masked_whiten
from .registry import Registry

ADVANTAGES = Registry("advantage estimator", "Add one with @trainers.advantages.register_advantage(name).")
register_advantage = ADVANTAGES.register
get_advantage = ADVANTAGES.get


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor, valid: Optional[torch.Tensor] = None):
    """Per-row ``(group mean, group std (unbiased), group count)`` over the valid rows of each group.

    A group with one valid row has std 0 (nothing to compare against)."""
    r = rewards.float()
    v = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.bool()
    _, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    w = v.float()
    count = torch.zeros(n_groups, device=r.device).index_add_(0, inv, w)
    total = torch.zeros(n_groups, device=r.device).index_add_(0, inv, r * w)
    mean = total / count.clamp(min=1)
    sq = torch.zeros(n_groups, device=r.device).index_add_(0, inv, (r - mean[inv]) ** 2 * w)
    std = torch.where(count > 1, (sq / (count - 1).clamp(min=1)).sqrt(), torch.zeros_like(sq))
    return mean[inv], std[inv], count[inv]


def _finish(adv: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    return adv if valid is None else torch.where(valid.bool(), adv, torch.zeros_like(adv))


@register_advantage("grpo")
def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, valid: Optional[torch.Tensor] = None, *,
                    eps: float = 1e-4) -> torch.Tensor:
    """GRPO: ``(r − mean_group) / (std_group + eps)`` (unbiased std, TRL's eps 1e-4)."""
    mean, std, _ = group_stats(rewards, group_ids, valid)
    return _finish((rewards.float() - mean) / (std + eps), valid)


@register_advantage("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor,
                       valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dr. GRPO: ``r − mean_group`` — no division by the std, which over-weights easy/hard prompts."""
    mean, _, _ = group_stats(rewards, group_ids, valid)
    return _finish(rewards.float() - mean, valid)


@register_advantage("rloo")
def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor,
                    valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RLOO: ``r_i − mean_{j≠i} r_j`` (leave-one-out baseline) ``= G/(G−1)·(r_i − mean_group)``."""
    mean, _, count = group_stats(rewards, group_ids, valid)
    scale = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.zeros_like(count))
    return _finish(scale * (rewards.float() - mean), valid)


@register_advantage("reinforce_pp")
def reinforce_pp_advantages(rewards: torch.Tensor, group_ids: Optional[torch.Tensor] = None,
                            valid: Optional[torch.Tensor] = None, *, eps: float = 1e-8,
                            group_baseline: bool = False) -> torch.Tensor:
    """REINFORCE++: rewards normalised over the whole batch, ``(r − mean_batch) / std_batch``.
    ``group_baseline=True`` subtracts the group mean first (REINFORCE++-baseline)."""
    r = rewards.float()
    if group_baseline:
        r = r - group_stats(r, group_ids, valid)[0]
    v = torch.ones_like(r) if valid is None else valid.float()
    return _finish(masked_whiten(r, v, eps=eps), valid)


def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked tokens of each row.

    ``δ_t = r_t + γ V_{t+1} − V_t``, ``A_t = δ_t + γλ A_{t+1}``, where ``t+1`` is the next *masked*
    position (tokens the env inserted between turns are skipped, not treated as steps) and the value
    after the last one is 0. Returns ``(advantages, returns = A + V)``, zero outside ``mask``.
    """
    B, T = token_rewards.shape
    m = mask.float()
    next_value = torch.zeros(B, dtype=values.dtype, device=values.device)
    running = torch.zeros_like(next_value)
    adv = torch.zeros_like(values)
    for t in range(T - 1, -1, -1):
        on = m[:, t] > 0
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        step = delta + gamma * lam * running
        running = torch.where(on, step, running)
        next_value = torch.where(on, values[:, t], next_value)
        adv[:, t] = running * m[:, t]
    return adv, (adv + values) * m

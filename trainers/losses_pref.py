"""Preference, reward-model and SFT losses: small pure tensor functions, named like the papers.

(:mod:`trainers.losses` re-exports them; this is their one definition.)

- :func:`sft_loss` — cross-entropy on completion tokens only.
- :func:`dpo_loss` — DPO (Rafailov et al., 2023) ``sigmoid``, with conservative label smoothing
  (cDPO); ``ipo`` (Azar et al., 2023; length-normalised log-ratios, as TRL does); ``hinge`` (SLiC,
  Zhao et al., 2023); ``robust`` (Chowdhury et al., 2024, unbiased under label noise ε).
- :func:`bradley_terry_loss` — reward-model pairwise loss ``-log σ(r_c - r_r - margin)``
  (Llama-2's margin variant when a margin is given).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def sft_loss(token_logps: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the tokens where ``loss_mask`` is 1.

    Args:
        token_logps: ``[B, T]`` log-prob of each target token.
        loss_mask: ``[B, T]`` 1 on completion tokens, 0 on prompt and padding.
    """
    mask = loss_mask.to(token_logps.dtype)
    return -(token_logps * mask).sum() / mask.sum().clamp(min=1.0)


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, chosen_lengths: Optional[torch.Tensor] = None,
             rejected_lengths: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses.

    All log-probs are ``[B]`` sums over each completion's tokens. With the log-ratios
    ``ρ_c = logπ(c) - logπ_ref(c)`` and ``ρ_r = logπ(r) - logπ_ref(r)`` and ``d = ρ_c - ρ_r``:

    - ``sigmoid``: ``-(1-ε) log σ(β d) - ε log σ(-β d)`` (ε = ``label_smoothing``; 0 is plain DPO);
    - ``ipo``: ``(d' - 1/(2β))²`` with ``d'`` the difference of *per-token* log-ratios
      (``chosen_lengths``/``rejected_lengths`` needed);
    - ``hinge``: ``max(0, 1 - β d)``;
    - ``robust``: ``(-(1-ε) log σ(β d) + ε log σ(-β d)) / (1 - 2ε)``.

    Returns ``(losses [B], chosen_rewards [B], rejected_rewards [B])``; the implicit rewards are
    ``β ρ`` (detached), for logging reward accuracy and margins.
    """
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    d = chosen_ratio - rejected_ratio
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * d) - eps * F.logsigmoid(-beta * d)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("dpo_loss(loss_type='ipo') needs chosen_lengths and rejected_lengths "
                             "(completion token counts) to length-normalise the log-ratios")
        d_norm = chosen_ratio / chosen_lengths.clamp(min=1) - rejected_ratio / rejected_lengths.clamp(min=1)
        losses = (d_norm - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * d)
    elif loss_type == "robust":
        if not 0 <= eps < 0.5:
            raise ValueError(f"dpo_loss(loss_type='robust') needs label_smoothing in [0, 0.5), got {eps}")
        losses = (-(1 - eps) * F.logsigmoid(beta * d) + eps * F.logsigmoid(-beta * d)) / (1 - 2 * eps)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose sigmoid, ipo, hinge or robust")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       margin: Optional[torch.Tensor] = None, center_rewards_coefficient: float = 0.0) -> torch.Tensor:
    """Bradley–Terry pairwise loss ``mean(-log σ(r_c - r_r - margin))``.

    ``center_rewards_coefficient`` > 0 adds ``coef · mean((r_c + r_r)²)`` (Eisenstein et al., 2023)
    so rewards stay centred around 0.
    """
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    return loss

"""Preference, reward-model and SFT losses: small pure tensor functions, named like the papers.

(:mod:`trainers.losses` re-exports them; this is their one definition.)

- :func:`sft_loss` — cross-entropy on completion tokens only.
- :func:`dpo_loss` — the DPO family, registered by name in :data:`DPO_LOSSES`: ``sigmoid`` (DPO,
  Rafailov et al., 2023, with conservative label smoothing, cDPO); ``ipo`` (Azar et al., 2023;
  length-normalised log-ratios, as TRL does); ``hinge`` (SLiC, Zhao et al., 2023); ``robust``
  (Chowdhury et al., 2024, unbiased under label noise ε).
- :func:`bradley_terry_loss` — reward-model pairwise loss ``-log σ(r_c - r_r - margin)``
  (Llama-2's margin variant when a margin is given).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from .registry import Registry, bind_options, option_names

DPO_LOSSES = Registry("DPO loss", "Add one with @trainers.losses_pref.register_dpo_loss(name).")
register_dpo_loss = DPO_LOSSES.register
get_dpo_loss = DPO_LOSSES.get


def sft_loss(token_logps: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the tokens where ``loss_mask`` is 1.

    Args:
        token_logps: ``[B, T]`` log-prob of each target token.
        loss_mask: ``[B, T]`` 1 on completion tokens, 0 on prompt and padding.
    """
    mask = loss_mask.to(token_logps.dtype)
    return -(token_logps * mask).sum() / mask.sum().clamp(min=1.0)


# -- DPO family: fn(chosen_ratio [B], rejected_ratio [B], chosen_lengths, rejected_lengths, *, options)
# -> losses [B], where ratio = log π(y) - log π_ref(y) summed over the completion's tokens and the
# lengths are completion token counts (or None). Keyword-only parameters are options (beta, …), filled
# from the config by name (trainers.registry.bind_options).
@register_dpo_loss("sigmoid")
def sigmoid_dpo_loss(chosen_ratio, rejected_ratio, chosen_lengths=None, rejected_lengths=None, *,
                     beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO ``-(1-ε) log σ(β d) - ε log σ(-β d)``, ``d = ρ_c - ρ_r`` (ε = ``label_smoothing``; 0 is plain
    DPO, > 0 conservative DPO)."""
    d = chosen_ratio - rejected_ratio
    return -(1 - label_smoothing) * F.logsigmoid(beta * d) - label_smoothing * F.logsigmoid(-beta * d)


@register_dpo_loss("ipo")
def ipo_loss(chosen_ratio, rejected_ratio, chosen_lengths=None, rejected_lengths=None, *,
             beta: float = 0.1) -> torch.Tensor:
    """IPO ``(d' - 1/(2β))²`` with ``d'`` the difference of *per-token* log-ratios (as TRL does)."""
    if chosen_lengths is None or rejected_lengths is None:
        raise ValueError("dpo_loss(loss_type='ipo') needs chosen_lengths and rejected_lengths "
                         "(completion token counts) to length-normalise the log-ratios")
    d_norm = chosen_ratio / chosen_lengths.clamp(min=1) - rejected_ratio / rejected_lengths.clamp(min=1)
    return (d_norm - 1 / (2 * beta)) ** 2


@register_dpo_loss("hinge")
def hinge_dpo_loss(chosen_ratio, rejected_ratio, chosen_lengths=None, rejected_lengths=None, *,
                   beta: float = 0.1) -> torch.Tensor:
    """SLiC's hinge ``max(0, 1 - β d)``."""
    return torch.relu(1 - beta * (chosen_ratio - rejected_ratio))


@register_dpo_loss("robust")
def robust_dpo_loss(chosen_ratio, rejected_ratio, chosen_lengths=None, rejected_lengths=None, *,
                    beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """Robust DPO ``(-(1-ε) log σ(β d) + ε log σ(-β d)) / (1 - 2ε)``: unbiased under label noise ε."""
    eps = label_smoothing
    if not 0 <= eps < 0.5:
        raise ValueError(f"dpo_loss(loss_type='robust') needs label_smoothing in [0, 0.5), got {eps}")
    d = chosen_ratio - rejected_ratio
    return (-(1 - eps) * F.logsigmoid(beta * d) + eps * F.logsigmoid(-beta * d)) / (1 - 2 * eps)


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, *, loss_type: str = "sigmoid", beta: float = 0.1,
             chosen_lengths: Optional[torch.Tensor] = None, rejected_lengths: Optional[torch.Tensor] = None,
             **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses of the registered DPO loss ``loss_type``, with its ``options``
    (``label_smoothing``, …; ``beta`` also scales the implicit rewards).

    All log-probs are ``[B]`` sums over each completion's tokens. Returns ``(losses [B],
    chosen_rewards [B], rejected_rewards [B])``; the implicit rewards are ``β ρ`` (detached), for
    logging reward accuracy and margins.
    """
    fn = get_dpo_loss(loss_type)
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if "beta" in option_names(fn):
        options["beta"] = beta
    losses = fn(chosen_ratio, rejected_ratio, chosen_lengths, rejected_lengths, **options)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def dpo_options(config: Any) -> dict:
    """``loss_type``, ``beta`` and the chosen DPO loss's options, read from a config (the options by
    name, ``loss_kwargs`` first; see :func:`trainers.registry.bind_options`)."""
    options = bind_options(get_dpo_loss(config.loss_type), config, config.loss_kwargs)
    options.pop("beta", None)
    return {"loss_type": config.loss_type, "beta": config.beta, **options}


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

"""Policy-gradient losses as small pure tensor functions, named like the papers.

Shapes: ``logprobs``, ``old_logprobs``, ``mask`` are ``[B, T]`` (T = completion positions, mask 1 on
tokens that count); ``advantages`` is ``[B]`` (one per sequence, GRPO) or ``[B, T]`` (GAE).

Each policy loss is called ``fn(logprobs, old_logprobs, advantages, mask, **options)`` — its
keyword-only parameters are its options, filled from the config by name
(:func:`trainers.registry.bind_options`) — and returns ``(per_token_loss [B, T] or [B, 1], stats)``;
:func:`aggregate` turns that into the scalar (``token-mean`` of DAPO, ``seq-mean`` of the original
GRPO, ``constant`` of Dr. GRPO). Policy losses, KL estimators and aggregations are registries
(:data:`POLICY_LOSSES`, :data:`KL_ESTIMATORS`, :data:`AGGREGATIONS`): the only lists of their names.

References: PPO (Schulman et al. 2017), clip-higher (DAPO, Yu et al. 2025), GSPO (Zheng et al. 2025),
CISPO (MiniMax-M1, 2025), KL estimators k1/k2/k3 (Schulman, "Approximating KL divergence", 2020),
adaptive KL (Ziegler et al. 2019), truncated importance sampling (Yao et al. 2025, "Your efficient RL
framework secretly brings you off-policy RL training").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .registry import Registry

POLICY_LOSSES = Registry("policy loss", "Add one with @trainers.losses.register_policy_loss(name).")
KL_ESTIMATORS = Registry("KL estimator", "Add one with @trainers.losses.register_kl(name).")
AGGREGATIONS = Registry("loss aggregation", "Add one with trainers.losses.register_aggregation(name, Aggregation(...)).")
register_policy_loss = POLICY_LOSSES.register
get_policy_loss = POLICY_LOSSES.get
register_kl = KL_ESTIMATORS.register
get_kl = KL_ESTIMATORS.get
register_aggregation = AGGREGATIONS.register
get_aggregation = AGGREGATIONS.get


# -- masked reductions ------------------------------------------------------------------------------
def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is 1."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when the mask is empty)."""
    return masked_sum(x, mask, dim) / (mask.sum() if dim is None else mask.sum(dim)).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions (PPO's advantage whitening)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


# -- log-probs and entropy from logits --------------------------------------------------------------
def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor, chunk_rows: int = 8) -> torch.Tensor:
    """``log_softmax(logits)[..., index]`` without materialising the full log-softmax for all rows.

    ``logits`` ``[B, T, V]``, ``index`` ``[B, T]`` → ``[B, T]`` float32. Works ``chunk_rows`` rows at
    a time, in float32 (a bf16 log-softmax loses the precision the ratio ``π/π_old`` needs).
    """
    out = []
    for lg, ix in zip(logits.split(chunk_rows), index.split(chunk_rows)):
        lg = lg.float()
        picked = lg.gather(-1, ix.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(lg, dim=-1))
    return torch.cat(out)


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = 8) -> torch.Tensor:
    """Per-position entropy ``-Σ p log p`` of the softmax of ``logits`` ``[B, T, V]`` → ``[B, T]``."""
    out = []
    for lg in logits.split(chunk_rows):
        logp = F.log_softmax(lg.float(), dim=-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out)


# -- aggregation ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Aggregation:
    """How a ``[B, T]`` loss becomes a scalar: ``numerator(loss, mask) / denominator(mask, max_length)``.

    Keeping the two apart lets the trainer compute the denominator once over all micro-batches of an
    optimizer step (so accumulated gradients equal the full batch's) and divide each part by it.
    """

    numerator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    denominator: Callable[[torch.Tensor, Optional[int]], torch.Tensor]


def _per_seq_means(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (masked_sum(loss, mask, -1) / mask.sum(-1).clamp(min=1)).sum()


def _length_budget(mask: torch.Tensor, max_length: Optional[int]) -> torch.Tensor:
    if max_length is None:
        raise ValueError("the `constant` aggregation needs max_length (the generation limit, max_new_tokens) "
                         "or a normalizer")
    return torch.tensor(float(mask.shape[0] * max_length))


# token-mean (DAPO): every token weighs the same
register_aggregation("token-mean", Aggregation(masked_sum, lambda mask, _: mask.sum().clamp(min=1)))
# seq-mean (original GRPO): the mean over sequences of each sequence's token mean
register_aggregation("seq-mean", Aggregation(_per_seq_means, lambda mask, _: (mask.sum(-1) > 0).sum().clamp(min=1)))
# constant (Dr. GRPO): Σ loss / (B · max_length) — no length bias
register_aggregation("constant", Aggregation(masked_sum, _length_budget))


def aggregate(per_token_loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              max_length: Optional[int] = None, normalizer: Optional[float] = None) -> torch.Tensor:
    """Reduce a ``[B, T]`` (or sequence-level ``[B, 1]``) loss to a scalar with the registered
    aggregation ``mode`` (``token-mean``, ``seq-mean``, ``constant`` or one of yours).

    ``normalizer`` replaces the denominator — pass the total over all micro-batches of one optimizer
    step so accumulated gradients equal the full batch's.
    """
    agg = get_aggregation(mode)
    if per_token_loss.shape[-1] == 1 and mask.shape[-1] != 1:
        per_token_loss = per_token_loss.expand_as(mask)
    denom = agg.denominator(mask, max_length) if normalizer is None else normalizer
    return agg.numerator(per_token_loss, mask) / denom


# -- importance ratios ------------------------------------------------------------------------------
def log_importance_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor,
                         level: str = "token") -> torch.Tensor:
    """``log π/π_old`` per token (``[B, T]``) or, at ``sequence`` level (GSPO), the length-normalised
    sequence log-ratio ``mean_t log π/π_old`` as ``[B, 1]``."""
    log_ratio = logprobs - old_logprobs
    if level == "token":
        return log_ratio
    if level == "sequence":
        return (masked_sum(log_ratio, mask, -1) / mask.sum(-1).clamp(min=1)).unsqueeze(-1)
    raise ValueError(f"importance-sampling level must be 'token' or 'sequence', got {level!r}")


def _adv(advantages: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages


def _clip_stats(ratio, adv, mask, epsilon_low, epsilon_high) -> dict:
    low = ((ratio < 1 - epsilon_low) & (adv < 0)).float()
    high = ((ratio > 1 + epsilon_high) & (adv > 0)).float()
    m = mask if ratio.shape[-1] != 1 else torch.ones_like(ratio)
    low, high = low.expand_as(m), high.expand_as(m)
    return {"clip_frac_low": masked_mean(low, m).detach(), "clip_frac_high": masked_mean(high, m).detach(),
            "clip_frac": masked_mean(torch.maximum(low, high), m).detach()}


# -- policy losses ----------------------------------------------------------------------------------
# Called as fn(logprobs, old_logprobs, advantages, mask, **options); the keyword-only parameters are
# the options, filled from the config by name (see trainers.registry.bind_options).
@register_policy_loss("clip")
def clipped_surrogate_loss(logprobs, old_logprobs, advantages, mask, *, epsilon_low: float = 0.2,
                           epsilon_high: Optional[float] = None, level: str = "token"):
    """PPO's clipped surrogate ``-min(r·A, clip(r, 1-ε_low, 1+ε_high)·A)``; ``ε_high > ε_low`` is
    DAPO's clip-higher. ``level="sequence"`` uses GSPO's sequence ratio instead of the token ratio."""
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    ratio = torch.exp(log_importance_ratio(logprobs, old_logprobs, mask, level))
    adv = _adv(advantages)
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv)
    return loss, _clip_stats(ratio, adv, mask, epsilon_low, epsilon_high)


@register_policy_loss("gspo")
def gspo_loss(logprobs, old_logprobs, advantages, mask, *, epsilon_low: float = 3e-4,
              epsilon_high: Optional[float] = 4e-4):
    """GSPO: the clipped surrogate on the length-normalised sequence ratio
    ``s = exp(mean_t log π/π_old)`` (much smaller ε than token-level PPO, as in the paper: set
    ``epsilon_low``/``epsilon_high`` accordingly in the config)."""
    return clipped_surrogate_loss(logprobs, old_logprobs, advantages, mask, epsilon_low=epsilon_low,
                                  epsilon_high=epsilon_high, level="sequence")


@register_policy_loss("cispo")
def cispo_loss(logprobs, old_logprobs, advantages, mask, *, epsilon_low: Optional[float] = None,
               epsilon_high: float = 4.0):
    """CISPO: ``-sg(clip(r, 1-ε_low, 1+ε_high)) · A · log π`` — the IS weight is clipped and detached,
    so every token keeps a gradient (none is dropped by clipping, unlike PPO). ``ε_low=None``: no
    lower bound (the paper's setting)."""
    ratio = torch.exp(logprobs - old_logprobs).detach()
    low = 0.0 if epsilon_low is None else 1 - epsilon_low
    weight = torch.clamp(ratio, min=low, max=1 + epsilon_high)
    adv = _adv(advantages)
    clipped = ((ratio > 1 + epsilon_high) | (ratio < low)).float()
    return -weight * adv * logprobs, {"clip_frac": masked_mean(clipped, mask)}


@register_policy_loss("reinforce")
def reinforce_loss(logprobs, old_logprobs, advantages, mask):
    """Plain policy gradient ``-A · log π`` (on-policy; ``old_logprobs`` unused)."""
    return -_adv(advantages) * logprobs, {}


# -- KL ---------------------------------------------------------------------------------------------
@register_kl("k1")
def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log π - log π_ref (unbiased, high variance, can be negative)."""
    return logprobs - ref_logprobs


@register_kl("k2")
def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π - log π_ref)² (biased, low variance)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


@register_kl("k3")
def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = exp(log π_ref - log π) - (log π_ref - log π) - 1 (unbiased, ≥ 0; GRPO's choice)."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def kl_loss_term(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, old_logprobs: Optional[torch.Tensor] = None,
                 kl: str = "k3") -> torch.Tensor:
    """Per-token KL penalty for the loss (GRPO). With ``old_logprobs`` it is weighted by the ratio
    ``π/π_old`` (DeepSeek-V3.2's correction, TRL's default), which makes the k3 gradient the unbiased
    reverse-KL gradient for samples drawn from ``π_old``; the value is unchanged when ``π = π_old``."""
    term = get_kl(kl)(logprobs, ref_logprobs)
    if old_logprobs is not None:
        term = term * torch.exp(logprobs - old_logprobs)
    return term


def kl_shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      mask: torch.Tensor, kl_coef: float, kl: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's KL-in-reward: per-token reward ``-β·KL_t`` plus the sequence score on its last token.

    Returns ``(token_rewards [B, T], kl [B, T])``, both zero outside ``mask``.
    """
    kl_t = get_kl(kl)(logprobs, ref_logprobs) * mask
    rewards = -kl_coef * kl_t
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)  # last masked position
    has = mask.sum(-1) > 0
    rewards[torch.arange(mask.shape[0], device=mask.device)[has], last[has]] += scores[has].to(rewards.dtype)
    return rewards, kl_t


class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op (kept so both controllers are used the same way)."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n_steps/horizon), steering the
    observed KL toward ``target``."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int = 10000):
        super().__init__(init_kl_coef)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs target > 0 and horizon > 0, got {target}, {horizon}")
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β after a batch of ``n_steps`` samples whose mean KL was ``current_kl``."""
        err = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon


# -- engine/trainer mismatch ------------------------------------------------------------------------
def truncated_importance_weights(trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                                 mask: torch.Tensor, level: str = "token", mode: str = "truncate",
                                 cap: float = 2.0) -> torch.Tensor:
    """Weights ``π_old_trainer / π_sampler`` that correct for the generation engine sampling from a
    slightly different distribution than the trainer computes (bf16 kernels, vLLM).

    ``level``: ``token`` (``[B, T]``) or ``sequence`` (the product over tokens, ``[B, 1]``).
    ``mode``: ``truncate`` clamps the weight at ``cap`` (TIS); ``mask`` zeroes weights above ``cap``
    (MIS). Detached: a weight, not a gradient path.
    """
    log_w = (trainer_logprobs - sampler_logprobs).detach() * mask
    if level == "sequence":
        log_w = log_w.sum(-1, keepdim=True)
    elif level != "token":
        raise ValueError(f"truncated IS level must be 'token' or 'sequence', got {level!r}")
    w = torch.exp(log_w.clamp(max=math.log(cap) + 20.0))  # no overflow before the cap applies
    if mode == "truncate":
        return w.clamp(max=cap)
    if mode == "mask":
        return w * (w <= cap)
    raise ValueError(f"truncated IS mode must be 'truncate' or 'mask', got {mode!r}")


# -- value function ---------------------------------------------------------------------------------
def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip_range: Optional[float] = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO's value loss ``½·max((V − R)², (V_clip − R)²)`` with ``V_clip = V_old + clip(V − V_old, ±c)``,
    token-mean over ``mask``. ``clip_range=None`` disables clipping."""
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * masked_mean(unclipped, mask), {"vf_clip_frac": torch.zeros(())}
    v_clip = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    clipped = (v_clip - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
    return loss, {"vf_clip_frac": masked_mean((clipped > unclipped).float(), mask).detach()}


# -- preference, reward-model and SFT losses: defined once in losses_pref, re-exported here -----------
from .losses_pref import bradley_terry_loss, dpo_loss, sft_loss  # noqa: E402,F401

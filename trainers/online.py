"""What GRPO, PPO and online DPO share: the training forward over a rollout batch, and rollout →
rewards → masks in one place.

- :func:`completion_logprobs` — one forward, log-probs (and optionally entropy) of the completion
  positions only (the LM head runs on ``T - start + 1`` positions, not the prompt).
- :func:`length_sorted_chunks` — micro-batches of rows of similar length, each trimmed to its own
  longest row, so no forward pays for another row's padding.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .losses import entropy_from_logits, selective_log_softmax


def completion_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                        temperature: float = 1.0, with_entropy: bool = False):
    """Log-prob of each token ``input_ids[:, start:]`` under ``model`` → ``[B, T - start]`` float32.

    ``start`` ≥ 1 is the first position that can hold a generated token (the shortest prompt).
    Logits are divided by ``temperature`` so the distribution is the one the engine sampled from.
    Returns ``(logprobs, entropy or None)``. Positions come from the attention mask, so left- and
    right-padded rows score the same.
    """
    if start < 1:
        raise ValueError(f"completion_logprobs: start must be ≥ 1 (a token needs a prefix), got {start}")
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    keep = input_ids.shape[1] - start + 1
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, logits_to_keep=keep)
    logits = out.logits[:, -keep:-1]
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = selective_log_softmax(logits, input_ids[:, start:])
    return logprobs, (entropy_from_logits(logits.detach()) if with_entropy else None)

"""Logits processing shared by the engines and the trainers: the *sampling distribution*.

Every engine samples from, and reports log-probs under, the distribution this module defines, so a
trainer that recomputes log-probs with :func:`sampling_logprobs` compares like with like:

1. ``temperature``: logits are divided by it (``temperature=0`` is greedy, see below);
2. ``top_k`` (> 0): only the ``k`` largest logits are kept (ties with the k-th are kept too);
3. ``top_p`` (< 1): of what is left, the smallest set of most likely tokens whose probability
   reaches ``top_p`` is kept (a token is kept when the mass of the tokens ranked strictly above it
   is below ``top_p``; the most likely token is always kept).

Removed tokens get ``-inf``; the log-prob of a token is ``log_softmax`` of the processed logits.
This is the order and the convention of vLLM and transformers (temperature → top-k → top-p).

Greedy (``temperature == 0``) picks the arg-max and reports log-probs of the *unprocessed* model
distribution (temperature 1, no filtering) — a one-hot distribution has no useful log-probs.

Sampling uses the exponential-race trick (``argmax(p / E)`` with ``E ~ Exp(1)``), which draws
exactly from ``p`` with only element-wise ops and an arg-max, so it runs on the device and can be
captured in a CUDA graph together with the forward pass.
"""

from __future__ import annotations

from typing import Optional

import torch


def process_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0) -> torch.Tensor:
    """Apply temperature, top-k and top-p to ``logits`` ``[..., V]``; returns float32 logits with
    ``-inf`` on removed tokens. ``temperature == 0`` (greedy) returns the logits unchanged."""
    logits = logits.float()
    if temperature == 0:
        return logits
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_above = torch.cumsum(probs, dim=-1) - probs
        remove_sorted = mass_above >= top_p
        remove_sorted[..., 0] = False  # the most likely token always survives
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_from_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of ``logits`` ``[B, V]``. Returns ``(tokens [B] long, logprobs [B]
    float32)``, the log-probs under the sampling distribution (see the module docstring)."""
    processed = process_logits(logits, temperature, top_k, top_p)
    logprobs = torch.log_softmax(processed, dim=-1)
    if temperature == 0:
        tokens = processed.argmax(dim=-1)
    else:
        # argmax(p / E), E ~ Exp(1): an exact draw from p without a host sync (no multinomial)
        race = torch.empty_like(logprobs).exponential_(generator=generator)
        tokens = (logprobs.exp() / race).argmax(dim=-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def sampling_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0,
                      top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Log-prob of each of ``token_ids`` ``[...]`` under the sampling distribution built from
    ``logits`` ``[..., V]`` (what the trainer recomputes to compare with the engine's)."""
    processed = process_logits(logits, temperature, top_k, top_p)
    return torch.log_softmax(processed, dim=-1).gather(-1, token_ids[..., None].long()).squeeze(-1)

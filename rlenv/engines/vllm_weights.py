"""Turn a trainer's HF model into the ``(name, tensor)`` stream vLLM loads, in layer-aligned buckets.

Kept apart from :mod:`rlenv.engines.vllm` because it needs no vLLM: it is plain torch/peft and is
tested on its own. The weights themselves come from :mod:`rlenv.engines.full_weights` (gathered
per block under FSDP2 / ZeRO-3, LoRA merged beside the base, never in place).

Two facts about vLLM 0.32 shape this module:

* vLLM's in-place reload (``reload_weights``) re-runs each layer's post-load processing (on CPU: the
  oneDNN / AMX weight prepacking) only for layers that *received* weights in that call. A layer fed
  only part of its weights (say ``q_proj`` but not ``k_proj`` of one fused ``qkv_proj``) is processed
  with the rest uninitialised. So buckets hold whole blocks (``model.layers.N.*``), never a split one.
* With tied embeddings HF checkpoints store the matrix once (``model.embed_tokens.weight``), but vLLM
  keeps a separate ``lm_head`` layer whose *prepacked* copy is rebuilt only when ``lm_head.weight`` is
  loaded. Leave it out and the embedding updates while the output projection silently keeps the old
  weights — exactly the "reload changes the output but does not match the new weights" trap. So the
  stream always carries ``lm_head.weight`` (the tied matrix) next to ``model.embed_tokens.weight``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import torch

from .full_weights import group_key, iter_full_weights, unwrap_model

__all__ = ["unwrap_model", "hf_named_weights", "weight_buckets"]


def hf_named_weights(model: Any, keep: Optional[bool] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's full weights under HF checkpoint names (LoRA merged beside the base), with
    ``lm_head.weight`` present even when tied — see :func:`rlenv.engines.full_weights.iter_full_weights`.
    A collective under sharding (every rank iterates; ranks that do not keep get Nones)."""
    return iter_full_weights(model, keep)


def weight_buckets(named: Iterable[tuple[str, Optional[torch.Tensor]]],
                   bucket_bytes: int) -> Iterator[list[tuple[str, Optional[torch.Tensor]]]]:
    """Pack ``(name, tensor)`` pairs into buckets of at most ``bucket_bytes`` (a single group larger
    than that gets a bucket of its own), never splitting one block or the embedding/head pair.

    A generator: a bucket is handed on as soon as it is full, so a sharded model is gathered one
    bucket at a time rather than whole. The stream must arrive grouped (blocks contiguous, the tied
    ``lm_head.weight`` last), which :func:`hf_named_weights` guarantees."""
    current, size, group, group_name, group_size = [], 0, [], None, 0

    def flush_group():
        nonlocal current, size
        if current and size + group_size > bucket_bytes:
            yield current
            current, size = [], 0
        current.extend(group)
        size += group_size

    for name, tensor in named:
        key = group_key(name)
        if key != group_name and group:
            yield from flush_group()
            group, group_size = [], 0
        group_name = key
        group.append((name, tensor))
        if tensor is not None:
            group_size += tensor.numel() * tensor.element_size()
    if group:
        yield from flush_group()
    if current:
        yield current

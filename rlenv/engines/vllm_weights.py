"""Turn a trainer's HF model into the ``(name, tensor)`` stream vLLM loads, in layer-aligned buckets.

Kept apart from :mod:`rlenv.engines.vllm` because it needs no vLLM: it is plain torch/peft and is
tested on its own.

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

import contextlib
import re
from typing import Any, Iterator

import torch

_BLOCK = re.compile(r"^(.*?\.layers\.\d+)\.")


def unwrap_model(model: Any) -> Any:
    """Strip DDP/accelerate wrappers (``.module``) and ``torch.compile``'s ``_orig_mod``."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            return model
        model = inner


@contextlib.contextmanager
def merged_adapter(model: Any):
    """While inside, a peft model has its LoRA merged into the base weights (undone on exit);
    any other model passes through untouched."""
    is_peft = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
    if is_peft:
        model.merge_adapter()
    try:
        yield model
    finally:
        if is_peft:
            model.unmerge_adapter()


def _hf_name(name: str) -> str | None:
    """peft's parameter name → the plain HF checkpoint name; None for adapter-only tensors."""
    if "lora_" in name or ".original_module." in name:
        return None
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


def hf_named_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's weights under HF checkpoint names (call inside :func:`merged_adapter` for peft),
    with ``lm_head.weight`` present even when it is tied to the input embedding."""
    model = unwrap_model(model)
    seen = set()
    embed = None
    for name, tensor in model.state_dict().items():
        hf = _hf_name(name)
        if hf is None or hf in seen:
            continue
        seen.add(hf)
        if hf.endswith("embed_tokens.weight"):
            embed = tensor
        yield hf, tensor.detach()
    config = getattr(model, "config", None)
    if "lm_head.weight" not in seen and embed is not None and getattr(config, "tie_word_embeddings", False):
        yield "lm_head.weight", embed.detach()


def _group_key(name: str) -> str:
    """Weights that must travel together: one transformer block, or embedding + tied head."""
    match = _BLOCK.match(name)
    if match:
        return match.group(1)
    if name.startswith("lm_head.") or "embed_tokens" in name:
        return "embeddings"
    return name.rsplit(".", 1)[0]


def weight_buckets(named: Iterator[tuple[str, torch.Tensor]],
                   bucket_bytes: int) -> list[list[tuple[str, torch.Tensor]]]:
    """Pack ``(name, tensor)`` pairs into buckets of at most ``bucket_bytes`` (a single group larger
    than that gets a bucket of its own), never splitting one block or the embedding/head pair."""
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in named:
        groups.setdefault(_group_key(name), []).append((name, tensor))
    buckets, current, size = [], [], 0
    for group in groups.values():
        nbytes = sum(t.numel() * t.element_size() for _, t in group)
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.extend(group)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets

"""Decode-time attention that reads each prompt's keys and values once for its ``n`` samples.

The ``n`` samples of one prompt share the prompt's key/value cache. A plain cache holds ``n``
copies of it and every decode step reads all of them; here the prompt part lives once per prompt
(``[P, kv_heads, L, d]``) next to a small per-row cache of the generated tokens, and one step is

    scores over the prompt:   queries of the prompt's n rows at once  @ K_prompt   [P, kv, n·rep, L]
    scores over own tokens:   each row's query                         @ K_own      [B, kv, rep, T]
    softmax over both parts joined through a shared running maximum, then the two weighted sums.

This is exact attention (not an approximation) — the same result as attending over the
concatenated cache — with ``n``-fold less prompt traffic per step. It is plugged into a
transformers model as an attention implementation (``AttentionInterface``) for the decode steps
only; the prompt prefill and the trainer's forward use the model's own implementation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

NAME = "rlenv_shared_prefix"
#: architectures whose attention is plain scaled dot-product (no logit soft-capping, no sinks)
SUPPORTED_MODEL_TYPES = {"qwen2", "qwen3", "llama", "mistral", "qwen2_moe", "qwen3_moe", "olmo2", "granite"}
_registered = False


def shared_prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor, scaling: float = None, rlenv_prefix: dict = None,
                            **_: Any) -> tuple:
    """One decode step's attention. ``key``/``value``: the rows' own generated tokens
    ``[B, kv, T, d]`` with ``attention_mask`` ``[B, 1, 1, T]`` (True = valid); ``rlenv_prefix``:
    ``{"k": [per layer [P, kv, L, d]], "v": [...], "mask": [P, 1, 1, L] bool, "n": n}``."""
    B, H, q_len, d = query.shape
    if q_len != 1 or rlenv_prefix is None:
        raise RuntimeError("shared_prefix_attention serves single-token decode steps with a prompt cache only")
    n = rlenv_prefix["n"]
    kp, vp = rlenv_prefix["k"][module.layer_idx], rlenv_prefix["v"][module.layer_idx]
    P, kv, L, _ = kp.shape
    rep = H // kv
    scale = scaling if scaling is not None else d ** -0.5
    neg = torch.finfo(torch.float32).min

    # prompt part: the n rows of a prompt query its keys together (one matmul with n·rep rows)
    qg = query.view(P, n, kv, rep, d).permute(0, 2, 1, 3, 4).reshape(P, kv, n * rep, d)
    s1 = torch.matmul(qg, kp.transpose(-1, -2)).float() * scale
    s1 = s1.masked_fill(~rlenv_prefix["mask"], neg)
    # own part: each row against its own generated tokens
    qo = query.view(B, kv, rep, d)
    s2 = torch.matmul(qo, key.transpose(-1, -2)).float() * scale
    s2 = s2.masked_fill(~attention_mask.view(B, 1, 1, -1), neg)

    def to_rows(x: torch.Tensor) -> torch.Tensor:  # [P, kv, n·rep, …] -> [B, kv, rep, …]
        return x.view(P, kv, n, rep, *x.shape[3:]).transpose(1, 2).reshape(B, kv, rep, *x.shape[3:])

    def to_groups(x: torch.Tensor) -> torch.Tensor:  # [B, kv, rep, …] -> [P, kv, n·rep, …]
        return x.view(P, n, kv, rep, *x.shape[3:]).transpose(1, 2).reshape(P, kv, n * rep, *x.shape[3:])

    m = torch.maximum(to_rows(s1.amax(-1)), s2.amax(-1))  # [B, kv, rep]
    e1 = torch.exp(s1 - to_groups(m)[..., None])
    e2 = torch.exp(s2 - m[..., None])
    o1 = to_rows(torch.matmul(e1.to(vp.dtype), vp))  # [B, kv, rep, d]
    o2 = torch.matmul(e2.to(value.dtype), value)
    z = to_rows(e1.sum(-1)) + e2.sum(-1)
    out = (o1.float() + o2.float()) / z[..., None]
    # the layout transformers' attention functions return: [B, q_len, heads, d]
    return out.to(query.dtype).reshape(B, 1, H, d), None


def supported(config: Any) -> bool:
    """Can this model's decode steps use the shared-prefix attention?"""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    # (sliding-window layers are refused by the engine before this is asked)
    return getattr(cfg, "model_type", None) in SUPPORTED_MODEL_TYPES


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, shared_prefix_attention)
        _registered = True


@contextlib.contextmanager
def decoding_with_shared_prefix(config: Any) -> Iterator[None]:
    """Switch the model's attention implementation to :func:`shared_prefix_attention` for the
    decode loop and restore it afterwards (the trainer shares the model)."""
    _register()
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before

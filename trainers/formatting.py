"""Turning data rows into token ids with a completion mask (SFT, DPO, reward models share this).

The chat rendering and tokenisation live in :mod:`rlenv.chat` (one renderer for the engines, the
rollout and the trainers: the prompt part is rendered *with* the generation prompt, exactly as the
engine renders it at sampling time); this module adds the padding and collation the trainers need.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlenv.chat import encode_messages, encode_pair  # noqa: F401  (the trainers' row encoders)


def pad_right(rows: Sequence[Sequence[int]], value: int, dtype=torch.long) -> torch.Tensor:
    """Right-pad lists to the longest one as a ``[B, T]`` tensor."""
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(list(r), dtype=dtype)
    return out


def collate_sequences(ids: Sequence[list], masks: Sequence[list], pad_id: int) -> dict:
    """``input_ids``, ``attention_mask`` and ``completion_mask`` (all ``[B, T]``, right-padded)."""
    return {"input_ids": pad_right(ids, pad_id),
            "attention_mask": pad_right([[1] * len(r) for r in ids], 0),
            "completion_mask": pad_right(masks, 0)}


def pad_id_of(tokenizer: Any) -> int:
    """The pad id (eos when the tokenizer has no pad token, 0 when neither)."""
    for v in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if v is not None:
            return int(v)
    return 0

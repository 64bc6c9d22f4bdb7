"""Turning data rows into token ids with a completion mask (SFT, DPO, reward models share this).

The chat template renders the text; the prompt part (rendered *with* the generation prompt, exactly
as the engine renders it at sampling time) and the completion part are tokenised separately and
concatenated, so the ids a model is trained on are the ids it would see and produce when generating.
Tokenizers without a chat template get plain ``prompt + completion + eos``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch


def as_messages(prompt: Any) -> list:
    """A prompt (string or chat messages) as a chat message list."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        return [dict(m) for m in prompt]
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return str(completion[-1]["content"])  # conversational completion: [{"role": "assistant", ...}]
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _ids(tokenizer: Any, text: str) -> list:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_pair(tokenizer: Any, prompt: Any, completion: Any, max_length: Optional[int] = None) -> tuple[list, list]:
    """``(ids, completion_mask)`` of one prompt/completion pair; the mask is 1 on completion tokens
    (the end-of-turn token included, so the model learns to stop). Truncated from the right."""
    text = _completion_text(completion)
    if getattr(tokenizer, "chat_template", None):
        msgs = as_messages(prompt)
        prompt_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": text}], tokenize=False)
        if not full.startswith(prompt_text):
            raise ValueError("this chat template does not render the prompt as a prefix of prompt+answer; "
                             "SFT/DPO need a prefix-stable template")
        completion_text = full[len(prompt_text):]
    else:
        prompt_text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in as_messages(prompt))
        completion_text = text + (tokenizer.eos_token or "")
    p, c = _ids(tokenizer, prompt_text), _ids(tokenizer, completion_text)
    ids, mask = p + c, [0] * len(p) + [1] * len(c)
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def encode_messages(tokenizer: Any, messages: Sequence[dict], max_length: Optional[int] = None) -> tuple[list, list]:
    """``(ids, assistant_mask)`` of a whole conversation: each assistant turn is trainable.

    Rendered turn by turn: the text up to each assistant turn (with the generation prompt) and the
    turn itself are tokenised as separate segments."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("a 'messages' data set needs a tokenizer with a chat_template")
    ids, mask, done = [], [], ""
    msgs = [dict(m) for m in messages]
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(msgs[:i + 1], tokenize=False)
        if not before.startswith(done) or not upto.startswith(before):
            raise ValueError("this chat template is not prefix-stable across turns; train on "
                             "prompt/completion pairs instead of 'messages'")
        seg = _ids(tokenizer, before[len(done):])
        ids, mask = ids + seg, mask + [0] * len(seg)
        seg = _ids(tokenizer, upto[len(before):])
        ids, mask = ids + seg, mask + [1] * len(seg)
        done = upto
    rest = tokenizer.apply_chat_template(msgs, tokenize=False)[len(done):]
    if rest:
        seg = _ids(tokenizer, rest)
        ids, mask = ids + seg, mask + [0] * len(seg)
    if not any(mask):
        raise ValueError("a 'messages' row has no assistant turn to train on")
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


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

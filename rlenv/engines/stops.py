"""Turning a row of sampled ids into a :class:`Completion`: eos and stop-string cuts, done once.

The rule (the same as vLLM's default): the token ids end with the token that ended the completion
— the eos token, or the token whose text completes a stop string — and that token is kept (the model
sampled it, so the trainer trains on it). The *text* excludes the eos token and everything from the
stop string on. A token that completes a stop string may carry a few characters after it; those
stay in the ids (re-tokenising the text instead would break token-in/token-out) but not in the text.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .base import Completion


def first_stop(text: str, stops: Sequence[str]) -> Optional[int]:
    """Character index of the earliest occurrence of any of ``stops`` in ``text`` (None if absent)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def stop_token_index(ids: Sequence[int], tokenizer: Any, stops: Sequence[str]) -> Optional[int]:
    """Index of the token whose text completes the first stop string, or None.

    Text grows monotonically with the prefix, so a binary search over prefixes needs only
    ``O(log n)`` decodes instead of one per token.
    """
    if not stops or not ids or first_stop(tokenizer.decode(ids, skip_special_tokens=True), stops) is None:
        return None
    lo, hi = 0, len(ids) - 1  # invariant: prefix ids[:hi+1] contains a stop
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(tokenizer.decode(ids[: mid + 1], skip_special_tokens=True), stops) is not None:
            hi = mid
        else:
            lo = mid + 1
    return hi


def finish_row(ids: list, logprobs: list, tokenizer: Any, eos_ids: Sequence[int], stops: Sequence[str],
               prompt_index: int = 0) -> Completion:
    """Cut one sampled row at its first eos token (kept) or stop string and build the Completion."""
    reason = "length"
    eos = set(eos_ids)
    for i, t in enumerate(ids):
        if t in eos:
            ids, logprobs, reason = ids[: i + 1], logprobs[: i + 1], "stop"
            break
    j = stop_token_index(ids, tokenizer, stops)
    if j is not None:
        ids, logprobs, reason = ids[: j + 1], logprobs[: j + 1], "stop"
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = first_stop(text, stops)
    if cut is not None:
        text = text[:cut]
    return Completion(token_ids=list(ids), text=text, logprobs=[float(x) for x in logprobs],
                      finish_reason=reason, prompt_index=prompt_index)

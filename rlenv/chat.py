"""Chat messages to text and token ids: the one place a chat template is applied.

The engines (a prompt for sampling), the rollout (the env's reply in a multi-turn episode), the
trainers (SFT/DPO/reward-model rows with a completion mask) and the reward-model verifier (the
conversation it scores) all render through :func:`render_chat`, so the text a model is trained on
is the text it sees when it generates, whoever built it. This module sits at the bottom layer next
to :mod:`rlenv.core` and imports nothing from the project.

    from rlenv.chat import encode_prompt, encode_pair
    ids = encode_prompt(tokenizer, [{"role": "user", "content": "2+2?"}])   # generation prompt
    ids, mask = encode_pair(tokenizer, "2+2?", "4")                           # mask 1 on "4<eos>"
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["as_messages", "has_chat_template", "render_chat", "encode_prompt", "encode_pair",
           "encode_messages", "env_turn_ids", "render_conversation"]


def as_messages(prompt: Any) -> list:
    """A prompt (a string, or a list of chat messages) as a fresh chat message list; a string
    becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        return [dict(m) for m in prompt]
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(messages: Sequence[dict], tokenizer: Any, add_generation_prompt: bool = True) -> str:
    """Render chat messages to text with the tokenizer's chat template (transformers'
    ``apply_chat_template``); ``add_generation_prompt`` opens the assistant's next turn."""
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"tokenizer {name!r} has no chat template, but the prompt is a list of chat messages; "
                         f"use a chat model's tokenizer, set tokenizer.chat_template, or give the env "
                         f"plain-string prompts")
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _ids(tokenizer: Any, text: str) -> list:
    """Token ids of already rendered text (the template placed the special tokens itself)."""
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_prompt(tokenizer: Any, prompt: Any) -> list:
    """Token ids of one prompt: ids pass through; chat messages get the chat template with a
    generation prompt; a plain string is tokenised as is."""
    if hasattr(prompt, "tolist") and not isinstance(prompt, (list, tuple, str)):  # a tensor of ids
        prompt = prompt.tolist()
    if isinstance(prompt, str):
        return list(tokenizer(prompt).input_ids)
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        return _ids(tokenizer, render_chat(prompt, tokenizer, add_generation_prompt=True))
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    raise TypeError(f"a prompt must be a non-empty list of token ids, a list of chat messages or a string; "
                    f"got {type(prompt).__name__} {str(prompt)[:60]!r}")


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return str(completion[-1]["content"])  # conversational completion: [{"role": "assistant", ...}]
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def encode_pair(tokenizer: Any, prompt: Any, completion: Any, max_length: Optional[int] = None) -> tuple[list, list]:
    """``(ids, completion_mask)`` of one prompt/completion pair; the mask is 1 on completion tokens
    (the end-of-turn token included, so the model learns to stop). Truncated from the right.

    The prompt part is rendered *with* the generation prompt, exactly as :func:`encode_prompt`
    renders it at sampling time, and tokenised apart from the completion. Tokenizers without a chat
    template get plain ``prompt + completion + eos``."""
    text = _completion_text(completion)
    if has_chat_template(tokenizer):
        msgs = as_messages(prompt)
        prompt_text = render_chat(msgs, tokenizer, add_generation_prompt=True)
        full = render_chat(msgs + [{"role": "assistant", "content": text}], tokenizer, add_generation_prompt=False)
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
    if not has_chat_template(tokenizer):
        raise ValueError("a 'messages' data set needs a tokenizer with a chat_template")
    ids, mask, done = [], [], ""
    msgs = [dict(m) for m in messages]
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        before = render_chat(msgs[:i], tokenizer, add_generation_prompt=True)
        upto = render_chat(msgs[:i + 1], tokenizer, add_generation_prompt=False)
        if not before.startswith(done) or not upto.startswith(before):
            raise ValueError("this chat template is not prefix-stable across turns; train on "
                             "prompt/completion pairs instead of 'messages'")
        seg = _ids(tokenizer, before[len(done):])
        ids, mask = ids + seg, mask + [0] * len(seg)
        seg = _ids(tokenizer, upto[len(before):])
        ids, mask = ids + seg, mask + [1] * len(seg)
        done = upto
    rest = render_chat(msgs, tokenizer, add_generation_prompt=False)[len(done):]
    if rest:
        seg = _ids(tokenizer, rest)
        ids, mask = ids + seg, mask + [0] * len(seg)
    if not any(mask):
        raise ValueError("a 'messages' row has no assistant turn to train on")
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def env_turn_ids(tokenizer: Any, history: list, generated_ids: list, assistant_text: str, reply: list) -> list:
    """Token ids to append after the model's turn so the context holds the env's reply and the
    next generation prompt, exactly as the chat template renders them.

    The template closes the assistant turn with text the model may or may not have produced
    (``<|im_end|>\\n`` in ChatML: the model generates ``<|im_end|>``, the template adds ``\\n``);
    only the part the model did not generate is added, so the generated ids stay untouched.
    """
    with_turn = list(history) + [{"role": "assistant", "content": assistant_text}]
    closed = render_chat(with_turn, tokenizer, add_generation_prompt=False)
    full = render_chat(with_turn + list(reply), tokenizer, add_generation_prompt=True)
    if not full.startswith(closed):
        raise RuntimeError("the chat template renders earlier turns differently once a reply follows; "
                           "token-in/token-out multi-turn rollouts need a prefix-stable template")
    opened = render_chat(history, tokenizer, add_generation_prompt=True)
    glue = ""
    if closed.startswith(opened):
        turn_text = closed[len(opened):]  # e.g. "answer<|im_end|>\n"
        generated_text = tokenizer.decode(generated_ids, skip_special_tokens=False)
        if turn_text.startswith(generated_text):
            glue = turn_text[len(generated_text):]
        elif turn_text.startswith(assistant_text):  # cut at a stop string: close the turn ourselves
            glue = turn_text[len(assistant_text):]
    return _ids(tokenizer, glue + full[len(closed):])


def render_conversation(tokenizer: Any, prompt: Any, completion: str, use_chat_template: bool = True) -> str:
    """The text of one (prompt, completion) exchange, as a reward model reads it: the prompt
    messages plus the completion as the assistant turn, chat-templated (no generation prompt);
    without a template, the prompt's text followed by the completion."""
    if use_chat_template:
        return render_chat(as_messages(prompt) + [{"role": "assistant", "content": completion}], tokenizer,
                           add_generation_prompt=False)
    if not isinstance(prompt, str):
        prompt = "\n".join(str(m.get("content", "")) for m in prompt)
    return prompt + completion

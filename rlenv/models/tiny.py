"""A tiny offline model preset: a small Qwen2 decoder with random weights and a one-byte-per-token (byte-level BPE without merges)
tokenizer with a ChatML chat template, built in-process and saved with ``save_pretrained`` so that
everything after it goes through the same ``from_pretrained`` path a hub model does.

Digits are never merged (one token per character), which is what lets a ~1 M parameter model learn
multi-digit arithmetic on a laptop CPU in minutes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

#: bumped whenever the preset (model or tokenizer) changes, so cached copies are rebuilt
PRESET_VERSION = 2

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, with {% generation %} markers so transformers can return assistant-token masks.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: named sizes; "tiny" is the default demo model (~0.8 M parameters, head_dim 32 so vLLM accepts it)
TINY_PRESETS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=512),
    "micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=128),
}


def build_tiny_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 byte-level BPE tokenizer with **no merges**: one token per byte (so one per ASCII
    character, digits never merged), plus ChatML special tokens. 259 tokens in all."""
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    # <|im_start|> is in the vocab; registering it as special keeps it one token in chat prompts
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_model(tokenizer: Qwen2Tokenizer, preset: str = "tiny", seed: int = 0,
                     **overrides) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 decoder sized by ``preset`` (see :data:`TINY_PRESETS`)."""
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; choose one of {sorted(TINY_PRESETS)}")
    cfg = dict(TINY_PRESETS[preset], **overrides)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        **cfg,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def create_tiny_model(path: str | os.PathLike, preset: str = "tiny", seed: int = 0,
                      overwrite: bool = False, **overrides) -> Path:
    """Build the preset and save model + tokenizer to ``path`` with ``save_pretrained``.

    Returns the path. An existing complete checkpoint at ``path`` is kept unless ``overwrite``.
    """
    path = Path(path)
    if (path / "config.json").exists() and (path / "tokenizer_config.json").exists() and not overwrite:
        return path
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, preset=preset, seed=seed, **overrides)
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def resolve_model_path(name: str, cache_dir: Optional[str | os.PathLike] = None) -> str:
    """Turn ``preset:tiny`` (or ``tiny``/``micro``) into a saved checkpoint directory; other names
    (local paths, hub ids) pass through unchanged."""
    preset = name.split(":", 1)[1] if name.startswith("preset:") else name
    if preset in TINY_PRESETS and not Path(name).exists():
        base = Path(cache_dir or os.environ.get("RLENV_CACHE", Path.home() / ".cache" / "rlenv"))
        return str(create_tiny_model(base / f"preset-{preset}-v{PRESET_VERSION}", preset=preset))
    missing = missing_local_model(name)
    if missing:
        raise FileNotFoundError(missing)
    return name


def missing_local_model(name: str) -> Optional[str]:
    """An error message when ``name`` is written as a local path (absolute, ``./``, ``../``, ``~``
    or more than one ``/``: a hub id has exactly one) and no such folder exists; else None."""
    if not isinstance(name, str) or name.startswith("preset:"):
        return None
    local = (os.path.isabs(os.path.expanduser(name)) or name.startswith((".", "~")) or name.count("/") > 1
             or "\\" in name)
    if local and not Path(name).expanduser().exists():
        return (f"model path {name!r} does not exist; pass a folder written by save_pretrained, a hub id "
                f"(org/name) or preset:tiny")
    return None

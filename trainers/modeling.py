"""Model loading for the trainers: policy, reward model, LoRA, reference model, token log-probs.

Everything goes through transformers' ``from_pretrained`` and peft; nothing here re-implements them.

- :func:`load_model` — a path, hub id or ``preset:tiny`` (built offline by
  :func:`rlenv.models.tiny.resolve_model_path`); a folder holding a LoRA adapter (a previous stage
  trained with LoRA) is loaded onto its base and merged, so stages chain whatever they trained.
- :func:`apply_lora` — wrap a model in a peft LoRA adapter (``config.lora``).
- :class:`Reference` — the frozen reference policy: the same model with adapters disabled under
  LoRA (no second copy in memory), a frozen deep copy otherwise. Trainers with β = 0 keep none.
- :func:`token_logprobs` / :func:`forward_logprobs` — log-prob of each next token, the forward every
  policy loss needs (chunked over the vocabulary: :mod:`trainers.logprobs`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from .logprobs import forward_token_logprobs, logits_logprobs

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, trained: bool = True) -> torch.dtype:
    """``model_dtype`` → torch dtype.

    ``auto`` is what a user of accelerate's mixed precision expects: float32 on CPU; on CUDA,
    float32 for weights an optimizer updates (the master weights — accelerate's bf16 autocast does
    the arithmetic in bf16) and bf16 for weights nothing updates (``trained=False``: a LoRA base,
    the reference copy, an inference-only model)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and not trained else torch.float32
    return _DTYPES[name]


def compute_dtype(mixed_precision: str) -> Optional[torch.dtype]:
    """The dtype a model computes in under accelerate's ``mixed_precision`` (``"bf16"`` → bf16),
    None when it computes in its weights' dtype. (fp16 autocast keeps overflow-prone ops in float32,
    which a pure fp16 copy could not: only bf16 is returned.)"""
    return torch.bfloat16 if mixed_precision == "bf16" else None


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    from rlenv.models.tiny import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(str(name_or_path)))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _adapter_base(path: Path) -> Optional[str]:
    cfg = path / "adapter_config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text()).get("base_model_name_or_path")


def load_model(name_or_model: Any, *, kind: str = "causal_lm", dtype: str = "float32",
               tokenizer: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``.

    Args:
        name_or_model: a model object (returned as is), a local folder, a hub id or ``preset:tiny``.
        kind: ``causal_lm`` (policies) or ``reward`` (a sequence-classification head, 1 output).
        dtype: ``float32`` | ``bfloat16`` | ``float16`` | ``auto``.
        tokenizer: used as is when given; otherwise loaded from the same place.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlenv.models.tiny import resolve_model_path

    if kind not in ("causal_lm", "reward"):
        raise ValueError(f"kind must be 'causal_lm' or 'reward', got {kind!r}")
    if not isinstance(name_or_model, (str, os.PathLike)):
        if tokenizer is None:
            path = getattr(getattr(name_or_model, "config", None), "_name_or_path", None)
            if not path:
                raise ValueError("pass tokenizer=... along with a model object (it has no _name_or_path)")
            tokenizer = load_tokenizer(path)
        return name_or_model, tokenizer
    path = resolve_model_path(str(name_or_model))
    torch_dtype = resolve_dtype(dtype)
    base = _adapter_base(Path(path))
    auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    extra = {"num_labels": 1} if kind == "reward" else {}
    try:
        model = auto.from_pretrained(base or path, dtype=torch_dtype, **extra)
    except OSError as e:
        raise OSError(f"could not load model {name_or_model!r}: {e}. Pass a local folder written by "
                      f"save_pretrained, a hub id (needs network) or 'preset:tiny'.") from None
    if base is not None:  # a LoRA stage's output: put the adapter on its base and merge it
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if tokenizer is None:
        tokenizer = load_tokenizer(path if (Path(path) / "tokenizer_config.json").exists() else (base or path))
    if kind == "reward" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model, tokenizer


def apply_lora(model: Any, config: Any, kind: str = "causal_lm", model_dtype: Optional[str] = None) -> Any:
    """Wrap ``model`` in a trainable LoRA adapter from ``config`` (a :class:`trainers.config.LoraConfig`:
    ``r``, ``alpha``, ``dropout``, ``target_modules``). A reward head stays fully trainable.

    With ``model_dtype="auto"`` on CUDA the frozen base is cast to bf16 (no optimizer touches it)
    while everything trained — the adapters, a reward head — stays float32 (see :func:`resolve_dtype`)."""
    from peft import LoraConfig, TaskType, get_peft_model

    auto_gpu = model_dtype == "auto" and resolve_dtype("auto", trained=False) != torch.float32
    if auto_gpu and next(model.parameters()).dtype == torch.float32:
        model = model.to(resolve_dtype("auto", trained=False))
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules,
                      task_type=TaskType.CAUSAL_LM if kind == "causal_lm" else TaskType.SEQ_CLS)
    model = get_peft_model(model, lora)  # peft keeps the adapters float32 (autocast_adapter_dtype)
    if auto_gpu:
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:  # a reward head copied from the bf16 base
                p.data = p.data.float()
    return model


def enable_gradient_checkpointing(model: Any) -> None:
    """Turn on transformers' gradient checkpointing (non-reentrant, which works with LoRA/DDP)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # frozen embeddings under LoRA would cut the graph
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


class Reference:
    """The frozen reference policy.

    ``Reference(policy)`` under LoRA evaluates ``policy`` with its adapters disabled (the base
    weights *are* the reference); ``Reference(policy, frozen=copy)`` evaluates a frozen copy.
    Calling it runs a no-grad forward and returns the model output.
    """

    def __init__(self, policy: Any, frozen: Optional[Any] = None):
        self.policy = policy
        self.frozen = frozen
        self.autocast = contextlib.nullcontext  # the loop sets accelerator.autocast (mixed precision)

    @property
    def module(self) -> Any:
        """The model a call runs (the frozen copy, or the policy whose adapters it disables)."""
        return self.frozen if self.frozen is not None else self.policy

    @property
    def shares_weights(self) -> bool:
        """True when the reference is the policy with adapters disabled (no copy)."""
        return self.frozen is None

    @torch.no_grad()
    def __call__(self, **inputs) -> Any:
        with self.autocast():
            if self.frozen is not None:
                return self.frozen(**inputs)
            with self.policy.disable_adapter():
                return self.policy(**inputs)

    def to(self, device: Any) -> "Reference":
        if self.frozen is not None:
            self.frozen.to(device)
        return self


def make_reference(model: Any, needed: bool = True, *, source: Any = None, kind: str = "causal_lm",
                   dtype: str = "float32", tokenizer: Any = None,
                   store_dtype: Optional[torch.dtype] = None) -> Optional[Reference]:
    """The reference for ``model`` (call before wrapping it for distribution): None when not
    ``needed`` (β = 0), adapters disabled under LoRA, else a frozen model in eval mode — loaded
    again from ``source`` (with the policy's ``dtype`` setting) when the policy came from a path, so
    it is built the way the policy was (e.g. partitioned at load under ZeRO-3), a deep copy of the
    policy otherwise. Shard it like the policy with :func:`trainers.distributed.prepare_reference`.

    ``store_dtype``: the dtype the policy computes in (:func:`compute_dtype`; bf16 under bf16 mixed
    precision). A float32 frozen model is stored in it: nothing updates it, so float32 master
    weights would only double its memory. (Under autocast the policy's norms and residual stream
    stay float32, so its step-0 log-probs differ from the bf16 copy's by bf16 rounding.)"""
    if not needed:
        return None
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return Reference(model)
    if isinstance(source, (str, os.PathLike)):
        frozen, _ = load_model(source, kind=kind, dtype=dtype, tokenizer=tokenizer)
    else:
        frozen = copy.deepcopy(model)
    if store_dtype is not None and next(frozen.parameters()).dtype == torch.float32:
        frozen = frozen.to(store_dtype)
    frozen.eval()
    frozen.requires_grad_(False)
    return Reference(model, frozen)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each next token: ``out[:, t] = log p(input_ids[:, t+1] | input_ids[:, :t+1])``.

    ``logits`` are the model's ``[B, T, V]`` logits for ``input_ids`` ``[B, T]``; returns ``[B, T-1]``
    in float32. ``temperature`` divides the logits first (match the sampling distribution). Works a
    chunk of positions at a time in float32 (:func:`trainers.logprobs.logits_logprobs`), so no
    full-size float32 copy of the logits is made.
    """
    return logits_logprobs(logits[:, :-1], input_ids[:, 1:], temperature)[0]


def forward_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """Run ``model`` (a causal LM, or a :class:`Reference`) and return :func:`token_logprobs`,
    computed by a chunked LM head (:func:`trainers.logprobs.forward_token_logprobs`) where the
    architecture allows: the ``[B, T, V]`` logits are never materialised.

    Positions are taken from the attention mask so left- and right-padded rows score the same."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    # position t predicts token t + 1; the last position predicts nothing (scored on any token, dropped)
    labels = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], 1)
    _, logprobs, _ = forward_token_logprobs(model, labels, temperature=temperature, input_ids=input_ids,
                                            attention_mask=attention_mask, position_ids=position_ids,
                                            use_cache=False)
    return logprobs[:, :-1]

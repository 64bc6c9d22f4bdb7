"""Supervised fine-tuning (:class:`SFTTrainer`): cross-entropy on completion tokens only.

Data, any of:

- a ``datasets.Dataset`` (or list of dicts) with a ``messages`` column (chat conversations; every
  assistant turn is trained) or ``prompt``/``completion`` columns (strings or chat messages);
- an env (``env=rlenv.make("arithmetic-v0")``): ``num_env_examples`` tasks drawn from it, the
  env's own prompt (system prompt, few-shot) as the prompt and ``task.info["target"]`` as the ideal
  completion.

    from trainers import SFTTrainer, SFTConfig
    trainer = SFTTrainer("preset:tiny", SFTConfig(output_dir="runs/sft", learning_rate=1e-3,
                                                  max_steps=300), env="arithmetic-v0")
    trainer.train()   # runs/sft/model is the fine-tuned model
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from .config import SFTConfig
from .formatting import collate_sequences, encode_messages, encode_pair, pad_id_of
from .losses_pref import sft_loss
from .loop import BaseTrainer
from .modeling import token_logprobs


def env_sft_rows(env: Any, n: int, seed: int = 0) -> list[dict]:
    """``n`` prompt/completion rows from an env: the prompt it shows and ``task.info["target"]``."""
    rows = []
    for i in range(n):
        obs, info = env.reset(seed=seed + i)
        task = info.get("task")
        target = None if task is None else task.info.get("target")
        if target is None:
            raise ValueError(f"{env!r}: task {getattr(task, 'id', i)!r} has no info['target']; SFT from an env "
                             f"needs the ideal completion there — or pass train_dataset= with prompt/completion")
        rows.append({"prompt": obs, "completion": str(target)})
    return rows


def encode_sft_row(tokenizer: Any, row: dict, max_length: int) -> tuple[list, list]:
    """Token ids and completion mask of one SFT row (``messages`` or ``prompt``/``completion``)."""
    if "messages" in row and row["messages"] is not None:
        return encode_messages(tokenizer, row["messages"], max_length)
    if "prompt" in row and "completion" in row:
        return encode_pair(tokenizer, row["prompt"], row["completion"], max_length)
    raise ValueError(f"an SFT row needs a 'messages' column or 'prompt' and 'completion' columns; got {sorted(row)}")


def pack_rows(encoded: list[tuple[list, list]], max_length: int) -> list[tuple[list, list]]:
    """Concatenate examples into rows of at most ``max_length`` tokens (greedy, in order).

    Packed examples share a row's attention (the classic GPT packing); each keeps its own
    completion mask, so the loss still covers completions only."""
    packed, ids, mask = [], [], []
    for i, m in encoded:
        if ids and len(ids) + len(i) > max_length:
            packed.append((ids, mask))
            ids, mask = [], []
        ids, mask = ids + list(i), mask + list(m)
    if ids:
        packed.append((ids, mask))
    return packed


@dataclasses.dataclass
class _Encoded:
    ids: list
    mask: list


class SFTTrainer(BaseTrainer):
    """Supervised fine-tuning on prompt/completion pairs, conversations or an env's ideal answers.

    Args:
        model: a model object, a path, a hub id or ``preset:tiny``.
        config: :class:`SFTConfig`.
        train_dataset: a ``datasets.Dataset`` or a list of dicts (see the module docstring).
        env: an env (or id) — the data source when ``train_dataset`` is None, and the pass-rate eval.
        num_env_examples: rows drawn from the env when it is the data source.
    """

    config_class = SFTConfig

    def __init__(self, model: Any, config: Optional[SFTConfig] = None, *, train_dataset: Any = None,
                 env: Any = None, tokenizer: Any = None, num_env_examples: int = 2000):
        self._dataset = train_dataset
        self._num_env_examples = num_env_examples
        super().__init__(model, config, tokenizer=tokenizer, env=env)

    @classmethod
    def from_stage(cls, model: Any, config: SFTConfig, run: Any) -> "SFTTrainer":
        """A spec's ``sft`` stage: the env's ideal completions, as many as the steps consume."""
        steps = config.max_steps if config.max_steps > 0 else 0
        n = min(20000, max(2000, steps * config.per_device_train_batch_size * config.gradient_accumulation_steps))
        return cls(model, config, env=run.env, num_env_examples=n)

    def setup(self) -> None:
        c = self.config
        if self._dataset is not None:
            rows = [dict(r) for r in self._dataset]
        elif self.env is not None:
            rows = env_sft_rows(self.env, self._num_env_examples, seed=c.seed)
        else:
            raise ValueError("SFTTrainer needs train_dataset= (messages or prompt/completion rows) or env=")
        if not rows:
            raise ValueError("SFTTrainer: the training data is empty")
        encoded = [encode_sft_row(self.tokenizer, r, c.max_length) for r in rows]
        if not c.completion_only_loss:
            encoded = [(ids, [1] * len(ids)) for ids, _ in encoded]
        if c.packing:
            encoded = pack_rows(encoded, c.max_length)
        self.train_rows = [_Encoded(ids, mask) for ids, mask in encoded]
        self.pad_id = pad_id_of(self.tokenizer)

    def collate(self, rows: list) -> dict:
        return collate_sequences([r.ids for r in rows], [r.mask for r in rows], self.pad_id)

    def compute_loss(self, model: Any, batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        logps = token_logprobs(out.logits, batch["input_ids"])
        mask = batch["completion_mask"][:, 1:]
        loss = sft_loss(logps, mask)
        with torch.no_grad():
            hit = (out.logits[:, :-1].argmax(-1) == batch["input_ids"][:, 1:]).float()
            acc = (hit * mask).sum() / mask.sum().clamp(min=1)
        return loss, {"token_accuracy": acc, "tokens": mask.sum()}

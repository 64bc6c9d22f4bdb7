"""Reward-model training (:class:`RewardTrainer`): a 1-output sequence-classification head trained
with the Bradley–Terry loss on preference pairs.

The model is ``AutoModelForSequenceClassification(num_labels=1)`` on top of the given causal LM
checkpoint (the head is new; transformers initialises it). Data rows are the same as DPO's
(``prompt``/``chosen``/``rejected``, strings or chat messages) with an optional ``margin`` column.
The exported folder (``<output_dir>/model``) is a plain ``save_pretrained`` sequence-classification
checkpoint, which :mod:`verifiers.reward_model` and PPO load as is.

    from trainers import RewardTrainer, RewardConfig
    RewardTrainer("runs/sft/model", RewardConfig(output_dir="runs/rm"), train_dataset=pairs).train()
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .config import RewardConfig
from .dpo import collate_preferences, encode_preferences
from .formatting import pad_id_of
from .losses_pref import bradley_terry_loss
from .loop import BaseTrainer


def pair_rewards(model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar rewards of the chosen and rejected halves of a ``[chosen; rejected]`` batch."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    rewards = out.logits.squeeze(-1).float()
    return rewards.chunk(2)


class RewardTrainer(BaseTrainer):
    """Bradley–Terry reward-model training.

    Args:
        model: a causal-LM checkpoint (path, hub id, ``preset:tiny``) to put a reward head on, or a
            sequence-classification model object.
        config: :class:`RewardConfig`.
        train_dataset: ``prompt``/``chosen``/``rejected`` rows (+ optional ``margin``).
        eval_dataset: held-apart pairs; :meth:`evaluate` reports pairwise accuracy on (at most
            ``config.eval_num_tasks`` of) them.
    """

    config_class = RewardConfig
    model_kind = "reward"

    def __init__(self, model: Any, config: Optional[RewardConfig] = None, *, train_dataset: Any = None,
                 eval_dataset: Any = None, tokenizer: Any = None):
        if train_dataset is None:
            raise ValueError("RewardTrainer needs train_dataset= with prompt/chosen/rejected rows")
        self._dataset, self._eval_dataset = train_dataset, eval_dataset
        super().__init__(model, config, tokenizer=tokenizer, env=None)

    @classmethod
    def from_stage(cls, model: Any, config: RewardConfig, run: Any) -> "RewardTrainer":
        """A spec's ``rm`` stage: verifier pairs of the current policy, a tenth held apart for the
        accuracy shown in the summary."""
        pairs = run.verifier_pairs(model, config)
        held = max(1, len(pairs) // 10)
        return cls(model, config, train_dataset=pairs[held:], eval_dataset=pairs[:held])

    def setup(self) -> None:
        self.pad_id = pad_id_of(self.tokenizer)
        self.train_rows = encode_preferences(self.tokenizer, self._dataset, self.config.max_length)
        self.eval_rows = (encode_preferences(self.tokenizer, self._eval_dataset, self.config.max_length)
                          if self._eval_dataset is not None else [])
        if not self.train_rows:
            raise ValueError("RewardTrainer: train_dataset is empty")

    def collate(self, rows: list) -> dict:
        return collate_preferences(rows, self.pad_id)

    def compute_loss(self, model: Any, batch: dict) -> tuple[torch.Tensor, dict]:
        chosen, rejected = pair_rewards(model, batch)
        loss = bradley_terry_loss(chosen, rejected, batch.get("margin"), self.config.center_rewards_coefficient)
        return loss, {"accuracy": (chosen > rejected).float().mean(), "margin": (chosen - rejected).detach().mean(),
                      "reward_mean": torch.cat([chosen, rejected]).detach().mean()}

    @torch.no_grad()
    def pairwise_accuracy(self, rows: list) -> float:
        """Fraction of pairs where the chosen completion scores higher than the rejected one."""
        model = self.unwrapped_model
        was_training = model.training
        model.eval()
        hits = 0
        bs = self.config.per_device_eval_batch_size
        for i in range(0, len(rows), bs):
            batch = {k: v.to(self.device) for k, v in collate_preferences(rows[i:i + bs], self.pad_id).items()}
            chosen, rejected = pair_rewards(model, batch)
            hits += int((chosen > rejected).sum())
        model.train(was_training)
        return hits / max(len(rows), 1)

    def evaluate(self) -> dict:
        rows = self.eval_rows[: self.config.eval_num_tasks]  # 0: no evaluation, as for the env trainers
        if not rows:
            return {}
        return {"accuracy": self.pairwise_accuracy(rows)}

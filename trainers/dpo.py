"""Offline DPO (:class:`DPOTrainer`) on chosen/rejected pairs.

Data: a ``datasets.Dataset`` (or list of dicts) with ``prompt``, ``chosen`` and ``rejected``
(strings or chat messages), optionally ``ref_chosen_logps``/``ref_rejected_logps`` (then no
reference model is kept at all). Pairs can also be generated from an env's verifier with
:func:`trainers.pairs.verifier_pairs`.

Each micro-batch runs chosen and rejected rows through the model in one forward (``[chosen;
rejected]``, as TRL does); the reference is the model with LoRA adapters disabled, a frozen copy, or
log-probs precomputed once before training (``precompute_ref_logprobs``, which frees the copy).

    from trainers import DPOTrainer, DPOConfig
    DPOTrainer("runs/sft/model", DPOConfig(output_dir="runs/dpo", beta=0.1), train_dataset=pairs,
               env="arithmetic-v0").train()
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from .config import DPOConfig
from .formatting import collate_sequences, encode_pair, pad_id_of
from .losses_pref import dpo_loss, dpo_options, sft_loss
from .loop import BaseTrainer
from .modeling import forward_logprobs

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclasses.dataclass
class PreferenceRow:
    """One tokenised pair; ``ref_*`` are the reference's summed completion log-probs when known."""

    chosen_ids: list
    chosen_mask: list
    rejected_ids: list
    rejected_mask: list
    ref_chosen: Optional[float] = None
    ref_rejected: Optional[float] = None
    margin: Optional[float] = None


def encode_preferences(tokenizer: Any, rows: Any, max_length: int) -> list[PreferenceRow]:
    """Tokenise ``prompt``/``chosen``/``rejected`` rows (strings or chat messages).

    Without a ``prompt`` column, ``chosen`` and ``rejected`` are whole conversations whose last
    message is the answer (the rest is taken as the prompt)."""
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        missing = [k for k in ("chosen", "rejected") if k not in r]
        if missing:
            raise ValueError(f"preference row #{i} lacks {missing}; rows need 'prompt', 'chosen' and 'rejected' "
                             f"(got {sorted(r)})")
        prompt, chosen, rejected = r.get("prompt"), r["chosen"], r["rejected"]
        if prompt is None:
            if not (isinstance(chosen, list) and isinstance(rejected, list)):
                raise ValueError(f"preference row #{i} has no 'prompt'; then 'chosen'/'rejected' must be "
                                 f"conversations (lists of messages)")
            prompt, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
        ci, cm = encode_pair(tokenizer, prompt, chosen, max_length)
        ri, rm = encode_pair(tokenizer, prompt, rejected, max_length)
        out.append(PreferenceRow(ci, cm, ri, rm, r.get("ref_chosen_logps"), r.get("ref_rejected_logps"),
                                 r.get("margin")))
    return out


def collate_preferences(rows: list[PreferenceRow], pad_id: int) -> dict:
    """``input_ids``/``attention_mask``/``completion_mask`` of ``[chosen; rejected]`` (``[2B, T]``),
    plus the precomputed reference log-probs and margins when every row has them."""
    batch = collate_sequences([r.chosen_ids for r in rows] + [r.rejected_ids for r in rows],
                              [r.chosen_mask for r in rows] + [r.rejected_mask for r in rows], pad_id)
    if all(r.ref_chosen is not None and r.ref_rejected is not None for r in rows):
        batch["ref_chosen_logps"] = torch.tensor([float(r.ref_chosen) for r in rows])
        batch["ref_rejected_logps"] = torch.tensor([float(r.ref_rejected) for r in rows])
    if all(r.margin is not None for r in rows):
        batch["margin"] = torch.tensor([float(r.margin) for r in rows])
    return batch


def completion_logps(model: Any, batch: dict, per_token: bool = False):
    """Summed completion log-probs ``[2B]`` and completion lengths ``[2B]`` of a collated batch
    (with ``per_token``, also the ``[2B, T-1]`` token log-probs and completion mask)."""
    logps = forward_logprobs(model, batch["input_ids"], batch["attention_mask"])
    mask = batch["completion_mask"][:, 1:].to(logps.dtype)
    out = ((logps * mask).sum(-1), mask.sum(-1))
    return out + (logps, mask) if per_token else out


class DPOTrainer(BaseTrainer):
    """Offline DPO (sigmoid / IPO / hinge / robust) on preference pairs.

    Args:
        model: the policy to train (a model object, path, hub id or ``preset:tiny``); usually the
            SFT stage's output. The reference is this model as it was at the start.
        config: :class:`DPOConfig`.
        train_dataset: rows with ``prompt``/``chosen``/``rejected`` (see module docstring).
        env: optional env for the pass-rate evaluation before/after training.
    """

    config_class = DPOConfig

    def __init__(self, model: Any, config: Optional[DPOConfig] = None, *, train_dataset: Any = None,
                 env: Any = None, tokenizer: Any = None):
        if train_dataset is None:
            raise ValueError("DPOTrainer needs train_dataset= with prompt/chosen/rejected rows "
                             "(trainers.pairs.verifier_pairs builds them from an env)")
        self._dataset = train_dataset
        super().__init__(model, config, tokenizer=tokenizer, env=env)

    @classmethod
    def from_stage(cls, model: Any, config: DPOConfig, run: Any) -> "DPOTrainer":
        """A spec's ``dpo`` stage: verifier pairs of the current policy; the env for the pass rate."""
        return cls(model, config, train_dataset=run.verifier_pairs(model, config), env=run.env)

    def _data_has_ref(self) -> bool:
        names = getattr(self._dataset, "column_names", None)
        if names is None:
            names = list(self._dataset[0]) if len(self._dataset) else []
        return all(c in names for c in REF_COLUMNS)

    def needs_reference(self) -> bool:
        return not self._data_has_ref()

    def setup(self) -> None:
        self.pad_id = pad_id_of(self.tokenizer)
        self.train_rows = encode_preferences(self.tokenizer, self._dataset, self.config.max_length)
        if not self.train_rows:
            raise ValueError("DPOTrainer: train_dataset is empty")
        if self.config.precompute_ref_logprobs and self.ref is not None:
            self.precompute_reference()

    @torch.no_grad()
    def precompute_reference(self) -> None:
        """Score every pair with the reference once, store the log-probs on the rows, free the copy."""
        self.ref.to(self.device)
        if self.ref.shares_weights:
            self.model.to(self.device)
        bs = self.config.per_device_eval_batch_size
        for i in range(0, len(self.train_rows), bs):
            rows = self.train_rows[i:i + bs]
            batch = {k: v.to(self.device) for k, v in collate_preferences(rows, self.pad_id).items()}
            seq, _ = completion_logps(self.ref, batch)
            chosen, rejected = seq.chunk(2)
            for r, c, j in zip(rows, chosen.tolist(), rejected.tolist()):
                r.ref_chosen, r.ref_rejected = c, j
        self.ref = None  # the frozen copy (if any) is no longer needed

    def collate(self, rows: list) -> dict:
        return collate_preferences(rows, self.pad_id)

    def compute_loss(self, model: Any, batch: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        seq, lengths, token_logps, mask = completion_logps(model, batch, per_token=True)
        chosen, rejected = seq.chunk(2)
        if "ref_chosen_logps" in batch:
            ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref_seq, _ = completion_logps(self.ref, batch)
            ref_chosen, ref_rejected = ref_seq.chunk(2)
        len_c, len_r = lengths.chunk(2)
        losses, r_c, r_r = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_lengths=len_c,
                                    rejected_lengths=len_r, **dpo_options(c))
        metrics = {"rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
                   "rewards/accuracy": (r_c > r_r).float().mean(), "rewards/margin": (r_c - r_r).mean(),
                   "logps/chosen": chosen.detach().mean(), "logps/rejected": rejected.detach().mean()}
        loss = losses.mean()
        if c.sft_weight:
            # RPO: keep the chosen answers likely, against DPO's tendency to lower both sides
            n = chosen.shape[0]
            nll = sft_loss(token_logps[:n], mask[:n])
            loss = loss + c.sft_weight * nll
            metrics["sft_nll"] = nll.detach()
        return loss, metrics

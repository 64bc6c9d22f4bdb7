"""A learned reward model as a verifier: any ``AutoModelForSequenceClassification`` checkpoint
(including one our reward-model stage trains) scores (prompt, completion) pairs.

>>> rm = RewardModelVerifier("path/to/rm", batch_size=32, normalize="running")   # doctest: +SKIP
>>> env = rlenv.SingleTurnEnv(tasks, [rm])                                        # as an env verifier
>>> rewards = rm.score_pairs(prompts, completions)                                # as PPO's reward

The text scored is the conversation rendered with the tokenizer's chat template when it has one
(prompt messages + the completion as the assistant turn), else ``prompt + completion``. Batches are
sorted by length so padding stays small; left truncation keeps the end of long completions, which
is where a sequence-classification head reads its score. ``torch`` and ``transformers`` are imported
only when a model is built, so importing this module is free.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Optional, Sequence, Union

from rlenv.chat import render_conversation

from .base import PARTIAL, VerifyResult, completion_text
from .registry import register

__all__ = ["RewardModelVerifier", "RunningMoments"]


class RunningMoments:
    """Running mean and standard deviation over every score seen (Chan et al.'s parallel update,
    so a batch is merged in one step)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        """Merge a batch of values into the running statistics."""
        n = len(values)
        if n == 0:
            return
        b_mean = sum(values) / n
        b_m2 = sum((v - b_mean) ** 2 for v in values)
        delta, total = b_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += b_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation (1.0 before two values have been seen)."""
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0


@register("reward_model")
class RewardModelVerifier:
    """Score completions with a sequence-classification reward model.

    Args:
        model: a checkpoint path / hub id, or a loaded ``PreTrainedModel``.
        tokenizer: required when ``model`` is an object; loaded from the path otherwise.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … (default: CUDA when available).
        batch_size: sequences per forward pass.
        max_length: longer texts are truncated from the left.
        normalize: ``None``; ``"running"`` (subtract the running mean, divide by the running std
            over all scores seen so far); or a fixed ``(mean, std)``.
        label: which logit is the score (``0`` for the usual one-label head).
        use_chat_template: render with the chat template (default: when the tokenizer has one).
        dtype: e.g. ``"bfloat16"`` to load the model in that precision.
    """

    name = "reward_model"

    def __init__(self, model: Any, tokenizer: Any = None, *, device: Optional[str] = None,
                 batch_size: int = 16, max_length: int = 2048,
                 normalize: Union[None, str, tuple] = None, label: int = 0,
                 use_chat_template: Optional[bool] = None, dtype: Optional[str] = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"RewardModelVerifier: batch_size must be ≥ 1, got {batch_size}")
        if not (normalize is None or normalize == "running"
                or (isinstance(normalize, (tuple, list)) and len(normalize) == 2 and float(normalize[1]) > 0)):
            raise ValueError(f"RewardModelVerifier: normalize must be None, 'running' or (mean, std>0), "
                             f"got {normalize!r}")
        if isinstance(model, str):
            kw = {"dtype": getattr(torch, dtype)} if dtype else {}
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForSequenceClassification.from_pretrained(model, **kw)
        elif tokenizer is None:
            raise ValueError("RewardModelVerifier: pass tokenizer= along with a loaded model")
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if tokenizer.pad_token is None:  # many decoder tokenizers ship without one
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            # the classification head finds each row's last real token through pad_token_id
            model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.truncation_side = "left"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size, self.max_length, self.label = batch_size, max_length, label
        self.use_chat_template = (getattr(tokenizer, "chat_template", None) is not None
                                  if use_chat_template is None else use_chat_template)
        self.normalize = normalize
        self.moments = RunningMoments()
        self._lock = threading.Lock()  # one forward at a time; rubrics may call from several threads

    # -- text ----------------------------------------------------------------------------------
    def render(self, prompt: Any, completion: str) -> str:
        """The text scored for one (prompt, completion): chat-templated or concatenated."""
        return render_conversation(self.tokenizer, prompt, completion, self.use_chat_template)

    # -- scoring -------------------------------------------------------------------------------
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Raw scores (the ``label`` logit) of already rendered texts, in input order."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
        out = [0.0] * len(texts)
        with self._lock, torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                     truncation=True, max_length=self.max_length, add_special_tokens=False)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                logits = self.model(**enc).logits[:, self.label].float().cpu().tolist()
                for i, v in zip(idx, logits):
                    out[i] = v
        return out

    def _normalized(self, raw: list[float]) -> list[float]:
        if self.normalize is None:
            return list(raw)
        if self.normalize == "running":
            self.moments.update(raw)
            mean, std = self.moments.mean, self.moments.std
        else:
            mean, std = float(self.normalize[0]), float(self.normalize[1])
        return [(r - mean) / (std + 1e-8) for r in raw]

    def score_pairs(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """Scores for (prompt, completion) pairs, normalised as configured — PPO's reward."""
        if len(prompts) != len(completions):
            raise ValueError(f"score_pairs got {len(prompts)} prompts and {len(completions)} completions")
        texts = [self.render(p, completion_text(c)) for p, c in zip(prompts, completions)]
        return self._normalized(self.score_texts(texts))

    def score_batch(self, completions: Sequence[str], tasks: Sequence[Any]) -> list[VerifyResult]:
        """The verifier interface: one result per completion, the raw score in ``details``."""
        texts = [self.render(t.prompt, completion_text(c)) for c, t in zip(completions, tasks)]
        raw = self.score_texts(texts)
        return [VerifyResult(r, PARTIAL, {"raw_score": s}) for r, s in zip(self._normalized(raw), raw)]

    def score(self, completion: str, task: Any) -> VerifyResult:
        """One completion (a batch of one; running normalisation sees it too)."""
        return self.score_batch([completion], [task])[0]

    def __repr__(self) -> str:
        return f"RewardModelVerifier({type(self.model).__name__}, device={self.device})"

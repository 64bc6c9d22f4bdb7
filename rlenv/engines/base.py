"""The one generation-engine interface used by eval and every online trainer.

An engine turns prompts (token ids or chat messages) into completions. Each completion carries the
sampled token ids, the decoded text, the log-prob of every sampled token *under the sampling
distribution* (temperature, top-p and top-k applied — the distribution the trainer corrects for), and
why it stopped (``"stop"``: eos or a stop string; ``"length"``: ``max_new_tokens`` reached).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Optional, Sequence


@dataclasses.dataclass
class SamplingParams:
    """Sampling settings. ``temperature=0`` means greedy. ``top_k=0`` and ``top_p=1`` disable them."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: Sequence[str] = ()
    seed: Optional[int] = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be ≥ 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be ≥ 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)


@dataclasses.dataclass
class Completion:
    """One sampled completion of one prompt."""

    token_ids: list  # the generated ids, exactly as sampled (stop-string cut applied)
    text: str
    logprobs: list  # one float per token in token_ids, under the sampling distribution
    finish_reason: str  # "stop" | "length"
    prompt_index: int = 0


class Engine(abc.ABC):
    """Base class of generation engines (``hf``, ``vllm``, ``openai``)."""

    tokenizer: Any = None

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[list[Completion]]:
        """Sample ``params.n`` completions for each prompt.

        ``prompts`` holds either token-id lists or chat-message lists (the engine applies the
        tokenizer's chat template with a generation prompt). Returns one list of ``n`` completions
        per prompt, in order.
        """

    def sync_weights(self, model: Any, adapter_only: bool = False) -> None:
        """Make the engine generate from ``model``'s current weights. Engines that share the
        trainer's model object (HF) need do nothing."""

    def close(self) -> None:
        """Free the engine's resources."""

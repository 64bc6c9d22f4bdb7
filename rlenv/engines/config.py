"""Engine and sampling settings, defined once: a run spec's ``engine`` section and every online
trainer's config hold these same models (:class:`trainers.config.RolloutConfig` inherits the
sampling fields and holds an :class:`EngineConfig` as ``engine``).

.. code-block:: yaml

    engine: {name: vllm, options: {gpu_memory_utilization: 0.5}, sampling: {temperature: 0.9, stop: ["</a>"]}}
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, model_validator

from ..config import Config
from .base import SamplingParams

__all__ = ["SamplingConfig", "EngineConfig"]


class SamplingConfig(Config):
    """How completions are sampled (every field goes to the engine's :class:`SamplingParams`).

    ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` switch those filters off; generation of
    a completion ends at EOS, at ``max_new_tokens`` or at the first ``stop`` string.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: list[str] = Field(default_factory=list)

    def check(self) -> None:
        super().check()
        self._non_negative("temperature", "top_k")
        self._in_range("top_p", 0.0, 1.0, lo_open=True)
        self._positive("max_new_tokens")

    def sampling_params(self, **per_call: Any) -> SamplingParams:
        """The engine's :class:`SamplingParams` from these settings (``n``, ``seed`` … per call).
        Every sampling field is passed on: one the engine does not know fails here, loudly."""
        values = {name: getattr(self, name) for name in SamplingConfig.model_fields}
        values["stop"] = tuple(values["stop"])
        return SamplingParams(**{**values, **per_call})


class EngineConfig(Config):
    """The generation engine of the online trainers: ``hf`` (transformers, default), ``vllm``, or
    ``openai`` (an OpenAI-compatible server; eval only). ``options`` go to the engine's constructor
    (e.g. ``{max_batch_size: 64}`` for hf, ``{gpu_memory_utilization: 0.5}`` for vllm).
    ``engine: vllm`` is short for ``engine: {name: vllm}``."""

    name: str = "hf"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    def check(self) -> None:
        super().check()
        from . import ENGINES  # the engine registry is the one list of names

        if self.name not in ENGINES:
            from ..config import FieldError, unknown_key

            raise FieldError("name", f": {unknown_key(self.name, ENGINES, 'unknown engine')}")

    def build(self, model: Any = None, tokenizer: Any = None, **extra: Optional[Any]) -> Any:
        """Build the engine (see :func:`rlenv.engines.make_engine`) with ``options`` and ``extra``."""
        from . import make_engine

        return make_engine(self.name, model=model, tokenizer=tokenizer, **{**self.options, **extra})

"""Engine and sampling settings, defined once: a run spec's ``engine`` section and every online
trainer's config hold these same models (:class:`trainers.config.RolloutConfig` inherits the
sampling fields and holds an :class:`EngineConfig` as ``engine``).

.. code-block:: yaml

    engine: {name: vllm, options: {gpu_memory_utilization: 0.5}, sampling: {temperature: 0.9, stop: ["</a>"]}}
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from ..config import Config, FieldError
from .base import SamplingParams

__all__ = ["SamplingConfig", "EngineConfig", "VLLM_ONLY"]


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


#: fields only the vLLM engine understands (the hf engine refuses them; openai takes server_url)
VLLM_ONLY = ("mode", "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "sync_method",
             "sync_dir")


class EngineConfig(Config):
    """Which engine generates, and how — the run spec's ``engine`` section and the online trainers'
    ``engine`` field. Every field reaches the engine's constructor (:meth:`arguments`; a test walks
    this schema to keep it so).

    .. code-block:: yaml

        engine:
          name: vllm                 # hf (default) | vllm | openai (eval only)
          mode: server               # vllm: colocate (in the trainer's processes) | server
          server_url: null           # vllm server / openai: a running server; null: the engine starts one
          tensor_parallel_size: 2    # vllm server mode: GPUs per engine
          data_parallel_size: 1      # vllm server mode: engine replicas inside the server
          gpu_memory_utilization: 0.3
          sync_method: auto          # vllm server mode: auto | nccl | disk
          sync_dir: /shared/sync     # vllm server mode, disk method: where weights are written
          options: {max_model_len: 4096}   # anything else the engine's constructor takes

    ``engine: vllm`` is short for ``engine: {name: vllm}``; ``options`` go to the constructor as they
    are (``{max_batch_size: 64}`` for hf)."""

    name: str = "hf"
    mode: Literal["colocate", "server"] = "colocate"
    server_url: Optional[str] = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.3
    sync_method: Literal["auto", "nccl", "disk"] = "auto"
    sync_dir: Optional[str] = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):  # `engine: vllm`
            return {"name": v}
        if isinstance(v, dict):
            v = dict(v)
            if v.get("mode") == "colocated":
                v["mode"] = "colocate"
            options = v.get("options")
            if isinstance(options, dict):
                # an option that is a field of its own (`options: {gpu_memory_utilization: 0.35}`, as
                # specs wrote it before the field existed) moves up to the field, unless both are set
                fields = set(cls.model_fields) - {"options", "name"}
                lifted = {k: options[k] for k in options if k in fields and k not in v}
                v["options"] = {k: x for k, x in options.items() if k not in lifted}
                v.update(lifted)
        return v

    def check(self) -> None:
        super().check()
        from . import ENGINES  # the engine registry is the one list of names

        if self.name not in ENGINES:
            from ..config import unknown_key

            raise FieldError("name", f": {unknown_key(self.name, ENGINES, 'unknown engine')}")
        self._positive("tensor_parallel_size", "data_parallel_size")
        self._in_range("gpu_memory_utilization", 0.0, 1.0, lo_open=True)
        defaults = type(self).model_fields
        changed = [f for f in VLLM_ONLY if getattr(self, f) != defaults[f].default]
        if self.name != "vllm" and changed:
            raise FieldError(changed[0], f": only the vllm engine takes {', '.join(changed)} (name is {self.name!r})")
        if self.name == "hf" and self.server_url:
            raise FieldError("server_url", ": the hf engine runs in the trainer's process; use name: vllm with "
                                           "mode: server, or name: openai for eval against a server")
        if self.name == "vllm" and self.mode == "colocate":
            server_only = [f for f in ("server_url", "sync_dir", "sync_method", "data_parallel_size", "tensor_parallel_size")
                           if getattr(self, f) != defaults[f].default]
            if server_only:
                raise FieldError(server_only[0], f": {', '.join(server_only)} need mode: server (a colocated vLLM "
                                                 "engine loads weights in-process and uses its own rank's device)")
        clash = sorted(set(self.options) & (set(defaults) - {"options"}))
        if clash:
            raise FieldError("options", f": {', '.join(clash)} {'is a field' if len(clash) == 1 else 'are fields'} "
                                        "of the engine section itself, set in both places; keep one")

    @classmethod
    def coerce(cls, value: Any) -> "EngineConfig":
        """``value`` (a name, a dict of settings, or an EngineConfig) as an EngineConfig."""
        if isinstance(value, cls):
            return value
        return cls.model_validate("hf" if value is None else value)

    def arguments(self) -> tuple[str, dict]:
        """``(engine name, constructor keyword arguments)``: each field under the name the engine's
        constructor takes, then ``options`` as they are."""
        kwargs: dict = {}
        if self.name == "vllm":
            kwargs.update(mode=self.mode, tensor_parallel_size=self.tensor_parallel_size,
                          gpu_memory_utilization=self.gpu_memory_utilization)
            if self.mode == "server":
                kwargs.update(server_url=self.server_url, sync_method=self.sync_method, sync_dir=self.sync_dir,
                              data_parallel_size=self.data_parallel_size)
        elif self.name == "openai":
            kwargs["base_url"] = self.server_url
        kwargs.update(self.options)
        return self.name, kwargs

    def build(self, model: Any = None, tokenizer: Any = None, **extra: Optional[Any]) -> Any:
        """Build the engine (:func:`rlenv.engines.build_engine`) from :meth:`arguments` and ``extra``."""
        from . import build_engine

        return build_engine(self, model=model, tokenizer=tokenizer, **extra)

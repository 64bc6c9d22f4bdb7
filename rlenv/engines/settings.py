"""The generation engine's settings, one schema for the run spec's ``engine`` section and the trainer
configs' ``engine`` field, and the one place that turns them into constructor arguments.

.. code-block:: yaml

    engine:
      name: vllm                 # hf (default) | vllm | openai (eval only)
      mode: server               # vllm: colocate (in the trainer's processes) | server
      server_url: null           # vllm server / openai: a running server; null: the engine starts one
      tensor_parallel_size: 2    # vllm: GPUs per engine (server mode, or colocated ranks sharing one)
      data_parallel_size: 1      # vllm server mode: engine replicas inside the server
      gpu_memory_utilization: 0.3
      sync_method: auto          # vllm server mode: auto | nccl | disk
      sync_dir: /shared/sync     # vllm server mode, disk method: where weights are written
      options: {max_model_len: 4096}   # anything else the engine's constructor takes

Every field reaches the engine: :func:`engine_arguments` maps each one to a keyword of the engine
class's constructor, and a test walks this schema to keep it so.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: fields only the vLLM engine understands (the hf engine refuses them; openai takes server_url)
VLLM_ONLY = ("mode", "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "sync_method",
             "sync_dir")


class EngineSettings(BaseModel):
    """Which engine generates, and how (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: Literal["hf", "vllm", "openai"] = "hf"
    mode: Literal["colocate", "server"] = "colocate"
    server_url: Optional[str] = None
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)
    sync_method: Literal["auto", "nccl", "disk"] = "auto"
    sync_dir: Optional[str] = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, v: Any) -> Any:
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

    @model_validator(mode="after")
    def _fits_the_engine(self) -> "EngineSettings":
        defaults = type(self).model_fields
        changed = [f for f in VLLM_ONLY if getattr(self, f) != defaults[f].default]
        if self.name != "vllm" and changed:
            raise ValueError(f"{', '.join(changed)}: only the vllm engine takes "
                             f"{'this setting' if len(changed) == 1 else 'these settings'} (name is {self.name!r})")
        if self.name == "hf" and self.server_url:
            raise ValueError("server_url: the hf engine runs in the trainer's process; use name: vllm with "
                             "mode: server, or name: openai for eval against a server")
        if self.name == "vllm" and self.mode == "colocate" and (self.server_url or self.sync_dir
                                                               or self.sync_method != "auto"
                                                               or self.data_parallel_size != 1):
            raise ValueError("server_url, sync_dir, sync_method and data_parallel_size are server-mode settings: "
                             "set mode: server (colocated vLLM loads weights in-process, one engine per rank)")
        if self.name == "vllm" and self.mode == "colocate" and self.tensor_parallel_size != 1:
            raise ValueError("tensor_parallel_size > 1 needs mode: server (a colocated engine uses its own rank's "
                             "device only)")
        clash = sorted(set(self.options) & (set(defaults) - {"options"}))
        if clash:
            raise ValueError(f"options: {', '.join(clash)} {'is a field' if len(clash) == 1 else 'are fields'} of "
                             "the engine section itself, set in both places; keep one")
        return self


def engine_settings(value: Union[str, dict, EngineSettings, None]) -> EngineSettings:
    """Validate ``value`` (an engine name, a dict of settings or :class:`EngineSettings`); raises
    ValueError whose message names the field at fault."""
    if isinstance(value, EngineSettings):
        return value
    try:
        return EngineSettings.model_validate("hf" if value is None else value)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "engine"
            lines.append(f"engine.{where}: {err['msg'].removeprefix('Value error, ')}"
                         if err["loc"] else f"engine: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(lines)) from None


def engine_arguments(value: Union[str, dict, EngineSettings]) -> tuple[str, dict]:
    """``(engine name, constructor keyword arguments)`` for settings ``value``: each field under the
    name the engine's constructor takes, then ``options`` as they are."""
    s = engine_settings(value)
    kwargs: dict = {}
    if s.name == "vllm":
        kwargs.update(mode=s.mode, tensor_parallel_size=s.tensor_parallel_size,
                      gpu_memory_utilization=s.gpu_memory_utilization)
        if s.mode == "server":
            kwargs.update(server_url=s.server_url, sync_method=s.sync_method, sync_dir=s.sync_dir,
                          data_parallel_size=s.data_parallel_size)
    elif s.name == "openai":
        kwargs["base_url"] = s.server_url
    kwargs.update(s.options)
    return s.name, kwargs

"""Run specs: one YAML file describes a whole run, validated before anything heavy starts.

.. code-block:: yaml

    model: preset:tiny                 # a local path, a hub id, or preset:tiny / preset:micro
    env: {id: arithmetic-v0, kwargs: {digits: 2}}
    stages:
      - sft: {max_steps: 60, learning_rate: 3.0e-3}
      - grpo: {max_steps: 40, beta: 0.0, group_size: 8}
    engine: {name: hf, sampling: {temperature: 1.0, max_new_tokens: 16}}
    output_dir: outputs/arithmetic
    seed: 0

Every error names the field path, e.g. ``stages[1].grpo.beta: must be >= 0, got -1.0``. A stage's
settings are checked against the trainer's config dataclass (:mod:`trainers.config`, imported
lazily), unknown keys included. ``key=value`` overrides (``stages[1].grpo.beta=0.04``) are applied
to the YAML before validation; values are parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator

from .engines.settings import EngineSettings

__all__ = ["SpecError", "RunSpec", "ModelSpec", "LoraSpec", "EnvRef", "CurriculumSpec", "EngineSpec", "SamplingSpec",
           "LoggingSpec", "Stage", "STAGE_CONFIGS", "load_spec", "parse_spec", "apply_overrides"]

#: stage name -> the trainer config dataclass its settings are validated against (imported lazily)
STAGE_CONFIGS = {
    "sft": "trainers.config:SFTConfig",
    "rm": "trainers.config:RewardConfig",
    "grpo": "trainers.config:GRPOConfig",
    "ppo": "trainers.config:PPOConfig",
    "dpo": "trainers.config:DPOConfig",
    "online_dpo": "trainers.config:OnlineDPOConfig",
}
ONLINE_STAGES = ("grpo", "ppo", "online_dpo")


class SpecError(ValueError):
    """An invalid run spec. ``errors`` holds one ``"field.path: what is wrong"`` line per problem."""

    def __init__(self, errors: Sequence[str], source: str = ""):
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + e for e in self.errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LoraSpec(_Strict):
    """LoRA adapter settings (peft); leave ``model.lora`` out for full fine-tuning."""

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: Union[str, list[str]] = "all-linear"


class ModelSpec(_Strict):
    """The policy model: a local path, a hub id or ``preset:tiny``; ``lora`` or full fine-tuning."""

    path: str = Field(min_length=1)
    lora: Optional[LoraSpec] = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):  # `model: preset:tiny`
            return {"path": v}
        if isinstance(v, dict) and v.get("lora") is True:  # `lora: true` = default LoRA settings
            return {**v, "lora": {}}
        if isinstance(v, dict) and v.get("lora") is False:
            return {**v, "lora": None}
        return v


class CurriculumSpec(_Strict):
    """Raise the env's ``knob`` through ``levels`` as the online stages' rollout pass rate rises:
    once the mean of the last ``window`` rollouts reaches ``raise_at`` (see :mod:`rlenv.curriculum`)."""

    knob: str = Field(min_length=1)
    levels: list[Any] = Field(min_length=2)
    raise_at: float = Field(0.8, gt=0.0, le=1.0)
    window: int = Field(5, gt=0)


class EnvRef(_Strict):
    """Which registered env to train and evaluate on, its keyword arguments and an optional
    curriculum over one of them."""

    id: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    curriculum: Optional[CurriculumSpec] = None

    @model_validator(mode="after")
    def _knob_not_in_kwargs(self) -> "EnvRef":
        if self.curriculum is not None and self.curriculum.knob in self.kwargs:
            raise ValueError(f"curriculum.knob `{self.curriculum.knob}` is also set in env.kwargs; "
                             f"remove it from kwargs, the curriculum sets it (levels {self.curriculum.levels})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"id": v} if isinstance(v, str) else v


class SamplingSpec(_Strict):
    """Generation settings shared by every online stage and eval (a stage may override them)."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    max_new_tokens: int = Field(256, gt=0)
    stop: list[str] = Field(default_factory=list)


class EngineSpec(EngineSettings):
    """The generation engine: ``hf`` (default), ``vllm`` (colocated or a server; tensor parallel size,
    memory fraction, server URL, weight-sync method and folder) or ``openai`` (an OpenAI-compatible
    server, eval only), with the sampling settings. Every field reaches the engine
    (:mod:`rlenv.engines.settings`); ``options`` go to the engine's constructor as they are (e.g.
    ``max_model_len`` for vLLM, ``max_batch_size`` for hf)."""

    sampling: SamplingSpec = Field(default_factory=SamplingSpec)

    def stage_engine(self) -> Union[str, dict]:
        """What a stage config's ``engine`` field gets: the name alone when nothing else is set, else
        every engine setting (the sampling settings travel as the stage's own fields)."""
        settings = self.model_dump(exclude={"sampling"})
        defaults = EngineSettings(name=self.name).model_dump()
        return self.name if settings == defaults else settings


class LoggingSpec(_Strict):
    """Where metrics go: ``metrics.jsonl`` always, TensorBoard when ``report_to: tensorboard``."""

    report_to: Literal["tensorboard", "none"] = "tensorboard"
    logging_steps: int = Field(1, gt=0)


@dataclasses.dataclass
class Stage:
    """One validated stage: its kind (``sft``, ``grpo``, …), the settings written in the spec and
    the trainer config built from them (global settings such as seed, LoRA and sampling filled in
    where the stage did not set them)."""

    kind: str
    settings: dict
    config: Any


class RunSpec(_Strict):
    """A validated run. Build it with :func:`load_spec` / :func:`parse_spec`."""

    model: ModelSpec
    env: EnvRef
    stages: list[dict[str, Optional[dict[str, Any]]]] = Field(min_length=1)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    output_dir: str = Field("outputs/run", min_length=1)
    seed: int = 0
    name: Optional[str] = None

    _stages: list = PrivateAttr(default_factory=list)

    @property
    def stage_list(self) -> list[Stage]:
        """The stages in order, each with its trainer config (see :class:`Stage`)."""
        return list(self._stages)


# -- error formatting -----------------------------------------------------------------------------

def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: Sequence[Any]) -> Optional[type]:
    """The pydantic model class that holds the field at ``loc`` (for "did you mean" hints)."""
    cls: Any = RunSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        cls = next((a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cls is None:
            return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _unknown_key(path: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(sorted(known))}"
    return f"{path}: unknown key `{key}` — {hint}"


def _format_pydantic(e: ValidationError, prefix: Sequence[Any] = ()) -> list[str]:
    lines = []
    for err in e.errors():
        loc = tuple(prefix) + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            model = _model_at(tuple(err["loc"])) if not prefix else None
            known = list(model.model_fields) if model is not None else []
            lines.append(_unknown_key(_path(loc), loc[-1], known) if known else f"{_path(loc)}: unknown key")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["loc"] and err["type"] not in ("model_type", "dict_type"):
            msg += f" (got {err['input']!r})"
        lines.append(f"{_path(loc)}: {msg}")
    return lines


# -- stages ---------------------------------------------------------------------------------------

def _config_class(kind: str) -> type:
    mod, _, attr = STAGE_CONFIGS[kind].partition(":")
    return getattr(importlib.import_module(mod), attr)


def _stage_defaults(spec: RunSpec, kind: str, index: int, field_names: set) -> dict:
    """Settings the spec fixes once for every stage; a stage's own settings win."""
    s = spec.engine.sampling
    lora = spec.model.lora
    glob = {
        "output_dir": str(Path(spec.output_dir) / f"{index}-{kind}"),
        "seed": spec.seed,
        "model_dtype": spec.model.dtype,
        "report_to": spec.logging.report_to,
        "logging_steps": spec.logging.logging_steps,
        "use_lora": lora is not None,
        "engine": spec.engine.stage_engine(),
        "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "max_new_tokens": s.max_new_tokens,
        "stop": list(s.stop),
    }
    if lora is not None:
        glob.update(lora_r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                    lora_target_modules=lora.target_modules)
    return {k: v for k, v in glob.items() if k in field_names}


_POST_INIT_ERR = re.compile(r"^(?:\w+)\.(\w+) (.*)$", re.S)


def _validate_stage(spec: RunSpec, index: int, item: dict, errors: list) -> Optional[Stage]:
    where = f"stages[{index}]"
    if len(item) != 1:
        errors.append(f"{where}: each stage is a mapping with exactly one key, the stage kind "
                      f"({', '.join(STAGE_CONFIGS)}), got {sorted(item) or 'an empty mapping'}")
        return None
    kind, settings = next(iter(item.items()))
    if kind not in STAGE_CONFIGS:
        errors.append(_unknown_key(where, kind, list(STAGE_CONFIGS)).replace("unknown key", "unknown stage"))
        return None
    where = f"{where}.{kind}"
    settings = dict(settings or {})
    cls = _config_class(kind)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    bad = [k for k in settings if k not in names]
    for k in bad:
        errors.append(_unknown_key(f"{where}.{k}", k, sorted(names)))
    if bad:
        return None
    if kind in ONLINE_STAGES and spec.engine.name == "openai" and "engine" not in settings:
        errors.append(f"engine.name: `openai` can only serve eval; the {kind} stage needs `hf` or `vllm`")
        return None
    try:
        config = TypeAdapter(cls).validate_python({**_stage_defaults(spec, kind, index, names), **settings})
    except ValidationError as e:
        for line in _format_pydantic(e):
            if line.startswith("(top level): "):  # a __post_init__ check: "Cls.field must be …"
                m = _POST_INIT_ERR.match(line.removeprefix("(top level): "))
                line = f"{where}.{m.group(1)}: {m.group(2)}" if m else f"{where}: {line[13:]}"
            else:
                line = f"{where}.{line}"
            errors.append(line)
        return None
    return Stage(kind, settings, config)


# -- overrides ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_path(key: str) -> list:
    parts, pos = [], 0
    for m in _TOKEN.finditer(key):
        if m.start() != pos and key[pos:m.start()] != ".":
            raise ValueError
        parts.append(int(m.group(2)) if m.group(2) is not None else (int(m.group(1)) if m.group(1).isdigit() else m.group(1)))
        pos = m.end()
    if pos != len(key) or not parts:
        raise ValueError
    return parts


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key=value`` overrides (dotted paths, list indices as ``[1]`` or ``.1``; values parsed
    as YAML) to a copy of ``data``. Raises :class:`SpecError` naming a malformed override."""
    import copy

    out = copy.deepcopy(data)
    errors = []
    for ov in overrides:
        key, sep, raw = ov.partition("=")
        try:
            if not sep:
                raise ValueError
            parts = _split_path(key.strip())
        except ValueError:
            errors.append(f"override {ov!r}: write it as key=value, e.g. stages[1].grpo.beta=0.04")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            here = _path(parts[:i + 1])
            if isinstance(part, int):
                if not isinstance(node, list) or not -len(node) <= part < len(node):
                    n = len(node) if isinstance(node, list) else 0
                    errors.append(f"override {ov!r}: {here} does not exist (the list has {n} items)")
                    break
            elif not isinstance(node, dict):
                errors.append(f"override {ov!r}: {_path(parts[:i]) or 'the spec'} is not a mapping")
                break
            if last:
                node[part] = value
            else:
                nxt = node[part] if isinstance(part, int) or part in node else None
                if nxt is None:  # `model.lora.r=8` on a spec without lora creates the mapping
                    nxt = node[part] = {}
                node = nxt
    if errors:
        raise SpecError(errors)
    return out


# -- entry points ---------------------------------------------------------------------------------

def parse_spec(data: Any, overrides: Sequence[str] = (), source: str = "", check_env: bool = True) -> RunSpec:
    """Validate a spec given as a dict (after applying ``overrides``). Raises :class:`SpecError`.

    ``check_env`` also checks that ``env.id`` is registered (imports the built-in tasks and env
    plugins, which is cheap; no model is loaded).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([f"(top level): a spec is a mapping of model/env/stages/…, got {type(data).__name__}"], source)
    data = dict(data)
    # expand the string shorthands so an override can reach inside (`model.lora.r=8`)
    if isinstance(data.get("model"), str):
        data["model"] = {"path": data["model"]}
    if isinstance(data.get("env"), str):
        data["env"] = {"id": data["env"]}
    if overrides:
        try:
            data = apply_overrides(data, overrides)
        except SpecError as e:
            raise SpecError(e.errors, source) from None
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_pydantic(e), source) from None
    errors: list[str] = []
    from .models.tiny import missing_local_model

    missing = missing_local_model(spec.model.path)
    if missing:  # caught here, before a run writes anything
        errors.append(f"model.path: {missing}")
    if check_env:
        from . import registry

        try:
            env_spec = registry.spec(spec.env.id)
        except LookupError as e:
            errors.append(f"env.id: {e}")
        else:
            errors += _check_curriculum_knob(spec.env, env_spec)
    stages = [_validate_stage(spec, i, item, errors) for i, item in enumerate(spec.stages)]
    if errors:
        raise SpecError(errors, source)
    spec._stages = stages
    return spec


def _check_curriculum_knob(env: EnvRef, env_spec: Any) -> list[str]:
    """The curriculum's knob must be a keyword the env's factory takes (checked from its signature,
    without building the env; factories taking ``**kwargs`` accept anything)."""
    import inspect

    if env.curriculum is None:
        return []
    try:
        params = inspect.signature(env_spec.load()).parameters
    except (TypeError, ValueError, ImportError, AttributeError):
        return []
    if env.curriculum.knob in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    close = difflib.get_close_matches(env.curriculum.knob, names, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"its keywords: {', '.join(names)}"
    return [f"env.curriculum.knob: `{env.id}` has no keyword `{env.curriculum.knob}` — {hint}"]


def load_spec(path: Union[str, Path], overrides: Sequence[str] = (), check_env: bool = True) -> RunSpec:
    """Read a YAML spec with ``yaml.safe_load``, apply ``key=value`` overrides and validate it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"no such file; pass the path of a spec YAML (see examples/)"], str(p)) from None
    except UnicodeDecodeError as e:
        raise SpecError([f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the spec "
                         f"as UTF-8"], str(p)) from None
    except (IsADirectoryError, PermissionError) as e:
        raise SpecError([f"cannot read it ({type(e).__name__})"], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError([f"{where}invalid YAML ({problem})"], str(p)) from None
    return parse_spec(data, overrides, source=str(p), check_env=check_env)


# `rlenv.spec(id)` is the registry lookup of the public API, but importing this submodule makes
# Python bind `rlenv.spec` to the module. Making the module callable (forwarding to
# `rlenv.registry.spec`) keeps `rlenv.spec("arithmetic-v0")` working whichever one is bound.
class _CallableSpecModule(type(importlib)):
    def __call__(self, id: str):
        """``rlenv.spec(id)``: the :class:`rlenv.registry.EnvSpec` registered under ``id``."""
        from .registry import spec as registry_spec

        return registry_spec(id)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableSpecModule

"""Run specs: one YAML file describes a whole run, validated before anything heavy starts.

.. code-block:: yaml

    plugins: [my_losses]               # modules imported first (they register losses, stages, envs …)
    model: preset:tiny                 # a local path, a hub id, or preset:tiny / preset:micro
    env: {id: arithmetic-v0, kwargs: {digits: 2}}
    stages:
      - sft: {max_steps: 60, learning_rate: 3.0e-3}
      - grpo: {max_steps: 40, beta: 0.0, group_size: 8}
    engine: {name: hf, sampling: {temperature: 1.0, max_new_tokens: 16}}
    logging: {report_to: [tensorboard], logging_steps: 5}
    output_dir: outputs/arithmetic
    seed: 0

One schema: a stage's settings *are* its trainer's config (``grpo`` → :class:`trainers.config.GRPOConfig`,
any stage registered in :mod:`trainers.stages`), and the run-wide sections are the same models the
configs hold. Each section fills every stage that has the field, unless the stage sets it itself:

- ``model.lora`` (:class:`~trainers.config.LoraConfig`) → ``lora``; ``model.dtype`` → ``model_dtype``;
- ``logging`` (:class:`~trainers.config.LoggingConfig`) → ``report_to``, ``logging_steps``, ``project``;
- ``engine`` (:class:`~rlenv.engines.config.EngineConfig`) → ``engine`` and ``engine.sampling``
  (:class:`~rlenv.engines.config.SamplingConfig`) → ``temperature``, ``max_new_tokens``, … of the
  stages that generate;
- ``output_dir`` → ``<output_dir>/<index>-<kind>``; ``seed`` → ``seed``.

Every error names the field path, e.g. ``stages[1].grpo.beta: must be >= 0, got -1.0``; a setting
that came from a run-wide section is reported there (``engine.sampling.max_new_tokens: …``).
``key=value`` overrides (``stages[1].grpo.beta=0.04``) are applied to the YAML before validation;
values are parsed as YAML.

``plugins`` are module names imported before anything is validated, looked up next to the spec file,
in the working directory and on ``sys.path``; installed packages can instead use the entry-point
groups ``rlenv.envs``, ``rlenv.verifiers`` and ``rlenv.trainers``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from trainers.config import LoggingConfig, ModelDtype, OptionalLora
from trainers.stages import STAGES, StageSpec

from .config import Config, FieldError, error_items, error_lines, unknown_key
from .engines.config import EngineConfig, SamplingConfig

__all__ = ["SpecError", "RunSpec", "ModelSpec", "EnvRef", "CurriculumSpec", "EngineSpec", "Stage", "load_spec",
           "parse_spec", "apply_overrides"]


class SpecError(ValueError):
    """An invalid run spec. ``errors`` holds one ``"field.path: what is wrong"`` line per problem."""

    def __init__(self, errors: Sequence[str], source: str = ""):
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + e for e in self.errors))


class ModelSpec(Config):
    """The policy model: a local path, a hub id or ``preset:tiny``; ``lora`` (every stage trains
    LoRA adapters) or full fine-tuning; ``dtype`` of the weights (default: the stages' default)."""

    path: str
    lora: OptionalLora = None
    dtype: Optional[ModelDtype] = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v  # `model: preset:tiny`

    def check(self) -> None:
        super().check()
        if not self.path:
            self._fail("path", "a model folder, hub id or preset:<name>", self.path)


class CurriculumSpec(Config):
    """Raise the env's ``knob`` through ``levels`` as the online stages' rollout pass rate rises:
    once the mean of the last ``window`` rollouts reaches ``raise_at`` (see :mod:`rlenv.curriculum`)."""

    knob: str
    levels: list[Any]
    raise_at: float = 0.8
    window: int = 5

    def check(self) -> None:
        super().check()
        if not self.knob:
            self._fail("knob", "the name of one of the env's keyword arguments", self.knob)
        if len(self.levels) < 2:
            self._fail("levels", "a list of at least 2 values", self.levels)
        self._in_range("raise_at", 0.0, 1.0, lo_open=True)
        self._positive("window")


class EnvRef(Config):
    """Which registered env to train and evaluate on, its keyword arguments, an optional
    curriculum over one of them, and what ``rlenv train`` does when the reward-hacking audit
    (:mod:`rlenv.audit`, run before the first step) flags the env: ``warn``, ``refuse`` or ``off``."""

    id: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    curriculum: Optional[CurriculumSpec] = None
    audit: Literal["warn", "refuse", "off"] = "warn"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"id": v} if isinstance(v, str) else v

    def check(self) -> None:
        super().check()
        if not self.id:
            self._fail("id", "a registered env id such as arithmetic-v0", self.id)
        if self.curriculum is not None and self.curriculum.knob in self.kwargs:
            raise FieldError("curriculum.knob", f": `{self.curriculum.knob}` is also set in env.kwargs; remove it "
                                                f"from kwargs, the curriculum sets it (levels {self.curriculum.levels})")


class EngineSpec(EngineConfig):
    """A spec's ``engine``: the :class:`EngineConfig` of the stages that generate, plus the
    ``sampling`` settings they (and eval) use."""

    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


@dataclasses.dataclass
class Stage:
    """One validated stage: its kind (``sft``, ``grpo``, …), the settings written in the spec, the
    trainer config built from them (run-wide sections filled in where the stage did not set them)
    and the registered :class:`trainers.stages.StageSpec` of its kind."""

    kind: str
    settings: dict
    config: Any
    stage_type: Optional[StageSpec] = None


class RunSpec(Config):
    """A validated run. Build it with :func:`load_spec` / :func:`parse_spec`."""

    plugins: list[str] = Field(default_factory=list)
    model: ModelSpec
    env: EnvRef
    stages: list[dict[str, Optional[dict[str, Any]]]] = Field(min_length=1)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    output_dir: str = "outputs/run"
    seed: int = 0
    name: Optional[str] = None

    _stages: list = PrivateAttr(default_factory=list)

    def check(self) -> None:
        super().check()
        if not self.output_dir:
            self._fail("output_dir", "a non-empty path", self.output_dir)

    @property
    def stage_list(self) -> list[Stage]:
        """The stages in order, each with its trainer config (see :class:`Stage`)."""
        return list(self._stages)


# -- plugins ----------------------------------------------------------------------------------------------

def import_plugins(names: Any, search: Sequence[Path] = ()) -> list[str]:
    """Import each module of a spec's ``plugins`` list (``search`` folders first on ``sys.path``);
    returns one error line per failure."""
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return [f"plugins: a list of module names (e.g. [my_losses]), got {names!r}"]
    for folder in reversed([str(Path(p).resolve()) for p in search]):
        if folder not in sys.path:
            sys.path.insert(0, folder)  # kept: a plugin may import its sibling modules later
    errors = []
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported with the entry at fault
            errors.append(f"plugins[{i}]: cannot import `{name}` ({type(e).__name__}: {e}); put {name}.py next "
                          f"to the spec or in the working directory, or install its package")
    return errors


# -- stages -----------------------------------------------------------------------------------------------

def _run_defaults(spec: RunSpec, kind: str, index: int, fields: dict) -> dict[str, tuple[Any, str]]:
    """What the run-wide sections give a stage config with ``fields``: field → (value, spec path)."""
    out: dict[str, tuple[Any, str]] = {
        "output_dir": (str(Path(spec.output_dir) / f"{index}-{kind}"), "output_dir"),
        "seed": (spec.seed, "seed"),
    }
    if spec.model.dtype is not None:
        out["model_dtype"] = (spec.model.dtype, "model.dtype")
    if "lora" in spec.model.model_fields_set:
        out["lora"] = (spec.model.lora.model_dump() if spec.model.lora is not None else None, "model.lora")
    # sections that are a part of the stage configs: the fields the user set, by name
    for section, path in ((spec.logging, "logging"), (spec.engine.sampling, "engine.sampling")):
        for name, value in section.model_dump(exclude_unset=True).items():
            out[name] = (value, f"{path}.{name}")
    engine = spec.engine.model_dump(exclude={"sampling"}, exclude_unset=True)
    if engine:
        out["engine"] = (engine, "engine")
    return {k: v for k, v in out.items() if k in fields}


def _merge(base: Any, own: Any) -> Any:
    """``own`` over ``base``; mappings merge key by key (a stage's ``engine.options`` adds to the run's)."""
    if isinstance(base, dict) and isinstance(own, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in own.items()}}
    return own


def _validate_stage(spec: RunSpec, index: int, item: dict, errors: list) -> Optional[Stage]:
    where = f"stages[{index}]"
    if len(item) != 1:
        errors.append(f"{where}: each stage is a mapping with exactly one key, the stage kind "
                      f"({', '.join(STAGES.names())}), got {sorted(item) or 'an empty mapping'}")
        return None
    kind, settings = next(iter(item.items()))
    if kind not in STAGES:
        errors.append(f"{where}: {unknown_key(kind, STAGES.names(), 'unknown stage')} (register your own with "
                      f"trainers.stages.register_stage in a module listed under `plugins:`)")
        return None
    stage_type = STAGES.get(kind)
    where = f"{where}.{kind}"
    settings = dict(settings or {})
    cls = stage_type.config_class()
    defaults = _run_defaults(spec, kind, index, cls.model_fields)
    data = {k: v for k, (v, _) in defaults.items()}
    data = {**data, **{k: _merge(data.get(k), v) for k, v in settings.items()}}
    try:
        config = cls.model_validate(data)
    except ValidationError as e:
        for path, text in error_items(e, cls):
            text = text.lstrip(": ").lstrip()
            field = re.split(r"[.\[]", path, maxsplit=1)[0]
            if field in defaults and field not in settings:  # the value came from a run-wide section
                errors.append(f"{defaults[field][1]}{path[len(field):]}: {text} (for {where})")
            else:
                errors.append(f"{where}.{path}: {text}" if path else f"{where}: {text}")
        return None
    return Stage(kind, settings, config, stage_type)


# -- overrides --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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


# -- entry points -----------------------------------------------------------------------------------------

def parse_spec(data: Any, overrides: Sequence[str] = (), source: str = "", check_env: bool = True) -> RunSpec:
    """Validate a spec given as a dict (after applying ``overrides``). Raises :class:`SpecError`.

    ``plugins`` are imported first (looked up next to ``source`` and in the working directory), so
    what they register is known to the validation. ``check_env`` also checks that ``env.id`` is
    registered (imports the built-in tasks and env plugins, which is cheap; no model is loaded).
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
    search = ([Path(source).parent] if source else []) + [Path.cwd()]
    errors = import_plugins(data.get("plugins"), search)
    if errors:
        raise SpecError(errors, source)
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(error_lines(e, RunSpec), source) from None
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
        raise SpecError(list(dict.fromkeys(errors)), source)  # a run-wide section's error once, not per stage
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
        raise SpecError(["no such file; pass the path of a spec YAML (see examples/)"], str(p)) from None
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


# -- names that moved (deprecated) ------------------------------------------------------------------------
_MOVED = {"LoraSpec": ("trainers.config", "LoraConfig"), "LoggingSpec": ("trainers.config", "LoggingConfig"),
          "SamplingSpec": ("rlenv.engines.config", "SamplingConfig")}


def __getattr__(name: str) -> Any:
    import warnings

    if name in _MOVED:
        module, attr = _MOVED[name]
        warnings.warn(f"rlenv.runspec.{name} is now {module}.{attr} (one model shared by specs and configs)",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)
    if name in ("STAGE_CONFIGS", "ONLINE_STAGES"):
        warnings.warn(f"rlenv.runspec.{name} is replaced by the stage table trainers.stages.STAGES",
                      DeprecationWarning, stacklevel=2)
        if name == "ONLINE_STAGES":
            return tuple(n for n in STAGES.names() if STAGES.get(n).generates)
        return {n: STAGES.get(n).config for n in STAGES.names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

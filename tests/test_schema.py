"""No setting is accepted and ignored: a test over the schema, not over a list kept by hand.

Every field of a run spec — the run-wide sections and every registered stage's config, walked
recursively, including whatever the ``engine`` section holds — is set, one at a time, to a
non-default valid value (found from its type and, for names, from the error that lists the valid
ones); the run's objects (:class:`trainers.pipeline.RunPlan`: the env, its curriculum, each stage's
config …) must then differ from the default run's. Then every stage is trained for a couple of steps
with all its config fields set to non-default values at once, and each field must be read by the
trainer — or refused by the config when the combination would leave it unused.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from rlenv.config import _model_in
from rlenv.runspec import RunSpec, SpecError, parse_spec
from trainers.pipeline import build_trainer, plan_run
from trainers.stages import STAGES, StageRun

BASE = {"model": {"path": "preset:micro"}, "env": {"id": "arithmetic-v0"},
        "stages": [{kind: {}} for kind in STAGES.names()]}  # one of every registered stage

#: values the generator cannot invent from a type: a real env keyword and env id, a curriculum the
#: env supports, an importable plugin module (written by the test), LoRA targets the model has
SPEC_VALUES = {("env", "id"): "countdown-v0", ("env", "kwargs"): {"digits": 1},
               ("env", "curriculum"): {"knob": "difficulty", "levels": [0, 1]},
               ("env", "curriculum", "levels"): [1, 2], ("plugins",): ["schema_probe_plugin"]}


# -- walking the schema -------------------------------------------------------------------------------------
def leaves(cls: type, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path, FieldInfo)`` of every settable field below ``cls``; a nested model that may be None
    is a leaf itself and is walked too."""
    out = []
    for name, info in cls.model_fields.items():
        path = prefix + (name,)
        sub = _model_in(info.annotation)
        if sub is None or info.default is None:
            out.append((path, info))
        if sub is not None:
            out += leaves(sub, path)
    return out


def _choices(message: str) -> list:
    """The valid names an error lists (backticked, quoted, or after 'known:'/'Registered:')."""
    found = re.findall(r"`([^`]+)`", message) + re.findall(r"'([^']+)'", message)
    for listing in re.findall(r"(?:known|Registered|options|keywords): ([^.;)(]+)", message):
        found += [x.strip() for x in listing.split(",")]
    return list(dict.fromkeys(found))


def candidates(info: Any, default: Any, name: str, probe) -> list:
    """Non-default values to try for a field, most ordinary first. ``probe(value)`` validates one
    and returns the error text (or None)."""
    ann, out = info.annotation, []
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if typing.get_origin(ann) is typing.Union and len(args) == 1 else ann
    origin = typing.get_origin(base)
    if base is bool:
        out = [not default]
    elif origin is Literal:
        out = list(typing.get_args(base))
    elif base is int:
        out = ([default // 4, default + 1] if isinstance(default, int) else []) + [1, 2, 3]
    elif base is float:
        out = ([default / 4, default * 0.9] if default else []) + [0.37, 0.05, 1.5]
    elif _model_in(base) is not None:
        out = [{}]
    elif base is str or origin is typing.Union:
        error = probe(f"zzz-{name}")
        out = [f"zzz-{name}"] + ([c for c in _choices(error) if not c.startswith("zzz")] if error else [])
    elif origin is list:
        error = probe([f"zzz-{name}"])
        out = [[f"zzz-{name}"]] + ([[c] for c in _choices(error) if not c.startswith("zzz")] if error else [])
    elif origin is dict or base is dict:
        error = probe({"zzz": 1})
        out = [{"zzz": 1}] + ([{c: v} for c in _choices(error) if not c.startswith("zzz") for v in (0.5, 2, True)]
                              if error else [])
    seen, unique = {repr(default)}, []
    for v in out:
        if repr(v) not in seen:
            seen.add(repr(v))
            unique.append(v)
    return unique


def default_of(info: Any) -> Any:
    from pydantic_core import PydanticUndefined

    value = info.get_default(call_default_factory=True)
    return None if value is PydanticUndefined else value


def with_value(data: dict, path: tuple, value: Any, hints: dict = {}) -> dict:  # noqa: B006
    """A copy of ``data`` with ``value`` at ``path`` (a nested model left unset takes its hint, if
    any, or an empty mapping first)."""
    import copy

    out = copy.deepcopy(data)
    node = out
    for i, part in enumerate(path[:-1]):
        if not isinstance(part, int) and node.get(part) is None:
            node[part] = copy.deepcopy(hints.get(path[:i + 1], {}))
        node = node[part]
    node[path[-1]] = value
    return out


# -- part 1: every spec field reaches the run's objects -----------------------------------------------------
def observe(plan) -> dict:
    """Every part of a RunPlan as plain data (configs dumped, the env as what it was built with)."""
    def plain(v):
        if isinstance(v, BaseModel):
            return v.model_dump()
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if hasattr(v, "reset") and hasattr(v, "step"):  # an env: the spec it was made from
            return (v.spec.id, dict(v.spec.kwargs))
        return v if isinstance(v, (str, int, float, bool, type(None), dict)) else str(v)

    out = {f.name: plain(getattr(plan, f.name)) for f in dataclasses.fields(plan)}
    out["modules"] = sorted(m for m in sys.modules if m.startswith("schema_probe_"))
    return out


def spec_leaves() -> list[tuple]:
    out = [(p, i) for p, i in leaves(RunSpec) if p != ("stages",)]
    for index, item in enumerate(BASE["stages"]):
        kind = next(iter(item))
        out += [(("stages", index, kind) + p, i) for p, i in leaves(STAGES.get(kind).config_class())]
    return out


def test_every_spec_field_reaches_the_run_or_is_refused(tmp_path, monkeypatch):
    (tmp_path / "schema_probe_plugin.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # output folders are only named, never written, but stay out of the repo

    def build(data):
        try:
            return observe(plan_run(parse_spec(data))), None
        except (SpecError, ValueError, TypeError) as e:
            return None, str(e)

    assert build(BASE)[1] is None, build(BASE)[1]
    ignored, unexplained = [], []
    for path, info in spec_leaves():
        probe = lambda v, path=path: build(with_value(BASE, path, v, SPEC_VALUES))[1]  # noqa: E731
        tried = [SPEC_VALUES[path]] if path in SPEC_VALUES else candidates(info, default_of(info), path[-1], probe)
        accepted = []  # valid values that changed nothing (one may equal the effective default)
        for value in tried:
            default_run = build(BASE)[0]  # rebuilt each time: a plugin, once imported, stays imported
            seen, err = build(with_value(BASE, path, value, SPEC_VALUES))
            if seen is not None:
                if seen != default_run:
                    break
                accepted.append(value)
        else:  # no value changed the run: ignored if some were accepted, else each refusal must name the field
            if accepted:
                ignored.append(f"{'.'.join(map(str, path))}={accepted!r}")
                continue
            if not tried or path[-1] not in (build(with_value(BASE, path, tried[0], SPEC_VALUES))[1] or ""):
                unexplained.append(".".join(map(str, path)))
    assert not ignored, f"spec fields accepted and ignored (the run's objects did not change): {ignored}"
    assert not unexplained, f"no valid non-default value, and no error naming the field, for: {unexplained}"


# -- part 2: every config field is read by its trainer (or refused) -----------------------------------------
#: sizes that keep each stage to seconds, sampling wide enough that a group's samples differ (or
#: there is nothing to compare), and what the generator cannot invent: the engine the CPU runs (hf)
#: with an option it takes, LoRA targets the model has, a reward model (the rm stage's)
RUN_VALUES = {"max_steps": 2, "max_new_tokens": 8, "eval_max_new_tokens": 8, "eval_num_tasks": 2,
              "temperature": 1.5, "top_p": 0.95, "top_k": 50,
              "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4, "num_prompts_per_step": 2,
              "group_size": 2, "max_length": 128, "report_to": [], "resume_from_checkpoint": "latest",
              "engine.name": "hf", "engine.options": {"max_batch_size": 64}, "lora.target_modules": ["q_proj", "v_proj"]}


def tracked(config: BaseModel, reads: set, prefix: str = "") -> BaseModel:
    """A copy of ``config`` (and of its nested models) that records which fields are read."""
    cls = type(config)
    fields = set(cls.model_fields)

    def __getattribute__(self, name):
        if name in fields:
            reads.add(prefix + name)
        return object.__getattribute__(self, name)

    sub = type(f"Tracked{cls.__name__}", (cls,), {"__getattribute__": __getattribute__, "__module__": __name__})
    data = {}
    for name in fields:
        value = config.__dict__[name]
        data[name] = tracked(value, reads, f"{prefix}{name}.") if isinstance(value, BaseModel) else value
    return sub.model_construct(_fields_set=set(config.model_fields_set), **data)


def all_non_default(cls: type, fixed: dict) -> tuple[dict, dict]:
    """Settings with every field of ``cls`` non-default where the values fit together (``fixed``
    ones as given), and the fields the config refused, with its message."""
    from pydantic import ValidationError

    data, refused = {}, {}

    def probe(path, value):
        try:
            cls.model_validate(with_value(data, path, value))
        except ValidationError as e:
            return str(e)
        return None

    for path, info in leaves(cls):
        key = ".".join(path)
        tried = [fixed[key]] if key in fixed else candidates(info, default_of(info), path[-1],
                                                            lambda v, p=path: probe(p, v))
        for value in tried:
            if probe(path, value) is None:
                data = with_value(data, path, value)
                break
        else:
            refused[key] = probe(path, tried[0]) if tried else "no candidate"
    return data, refused


def test_tracking_sees_reads_and_not_dumps():
    from trainers.config import GRPOConfig

    reads: set = set()
    cfg = tracked(GRPOConfig(lora=True), reads)
    cfg.model_dump(), repr(cfg), cfg.model_copy(update={"beta": 0.5})
    assert reads == set()
    assert cfg.beta == 0.0 and cfg.lora.r == 16 and reads == {"beta", "lora", "lora.r"}


@pytest.mark.slow
def test_every_config_field_is_read_by_its_trainer_or_refused(micro_model_dir, tmp_path):
    import rlenv

    env = rlenv.make("arithmetic-v0", digits=1)
    fixed = dict(RUN_VALUES)
    # stages that produce a reward model first: the others then use theirs as `reward_model`
    kinds = sorted(STAGES.names(), key=lambda k: STAGES.get(k).produces != "reward_model")
    problems = {}
    for kind in kinds:
        stage = STAGES.get(kind)
        cls = stage.config_class()
        data, refused = all_non_default(cls, {**fixed, "output_dir": str(tmp_path / kind)})
        for key, message in refused.items():
            assert key.split(".")[-1] in message, (kind, key, message)  # a refusal names the field
        reads: set = set()
        config = tracked(cls.model_validate(data), reads)
        run = StageRun(env=env, output_dir=tmp_path / kind, reward_model=fixed.get("reward_model"), seed=0)
        result = build_trainer(stage, micro_model_dir, config, run).train()
        assert result["steps"] == 2, kind
        if stage.produces == "reward_model":
            fixed["reward_model"] = result["model_dir"]
        unread = {".".join(p) for p, _ in leaves(cls)} - reads - set(refused)
        if unread:
            problems[kind] = sorted(unread)
    assert not problems, f"config fields set to non-default values that no trainer read: {problems}"

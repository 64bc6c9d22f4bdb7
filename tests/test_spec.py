"""Run specs: validation with field paths, stage configs from trainers.config, overrides."""

import textwrap

import pytest
import yaml

from rlenv.spec import SpecError, apply_overrides, load_spec, parse_spec

EXAMPLE = "examples/arithmetic_sft_grpo.yaml"

BASE = {
    "model": "preset:tiny",
    "env": {"id": "arithmetic-v0", "kwargs": {"digits": 1}},
    "stages": [{"sft": {"max_steps": 5}}, {"grpo": {"beta": 0.04, "group_size": 4}}],
    "engine": {"sampling": {"temperature": 0.7, "max_new_tokens": 16}},
    "output_dir": "outputs/x",
    "seed": 3,
}


def errors_of(data, overrides=()):
    with pytest.raises(SpecError) as ei:
        parse_spec(data, overrides)
    return ei.value.errors


def test_example_spec_is_valid():
    from pathlib import Path

    spec = load_spec(Path(__file__).resolve().parents[1] / EXAMPLE)
    assert spec.model.path == "preset:tiny" and spec.env.id == "arithmetic-v0"
    assert [s.kind for s in spec.stage_list] == ["sft", "grpo"]


def test_stage_configs_take_global_settings():
    from trainers.config import GRPOConfig, SFTConfig

    spec = parse_spec(BASE)
    sft, grpo = spec.stage_list
    assert isinstance(sft.config, SFTConfig) and isinstance(grpo.config, GRPOConfig)
    assert sft.config.max_steps == 5 and sft.config.seed == 3 and sft.config.output_dir == "outputs/x/0-sft"
    assert grpo.config.beta == 0.04 and grpo.config.group_size == 4
    assert grpo.config.temperature == 0.7 and grpo.config.max_new_tokens == 16  # from engine.sampling
    assert grpo.config.use_lora is False
    lora = parse_spec({**BASE, "model": {"path": "preset:tiny", "lora": {"r": 4}},
                       "stages": [{"grpo": {"temperature": 1.2}}]})
    cfg = lora.stage_list[0].config
    assert cfg.use_lora and cfg.lora_r == 4 and cfg.temperature == 1.2  # a stage's own setting wins


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 reads `1e-5` (no dot) as a string; the spec must still accept it as a number
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(BASE).replace("max_steps: 5", "max_steps: 5\n    learning_rate: 1e-5"))
    assert load_spec(p).stage_list[0].config.learning_rate == 1e-5


@pytest.mark.parametrize("patch, expected", [
    ({"stages": [{"sft": {}}, {"grpo": {"betaa": 0.1}}]}, "stages[1].grpo.betaa: unknown key `betaa` — did you mean `beta`?"),
    ({"stages": [{"sft": {"learning_rate": -1e-4}}]}, "stages[0].sft.learning_rate: must be > 0, got -0.0001"),
    ({"stages": [{"grpo": {"beta": "high"}}]}, "stages[0].grpo.beta: Input should be a valid number"),
    ({"stages": [{"grpo": {"loss_agg": "mean"}}]}, "stages[0].grpo.loss_agg: must be one of"),
    ({"stages": [{"sfx": {}}]}, "stages[0]: unknown stage `sfx` — did you mean `sft`?"),
    ({"stages": [{"sft": {}, "grpo": {}}]}, "stages[0]: each stage is a mapping with exactly one key"),
    ({"stages": []}, "stages: List should have at least 1 item"),
    ({"outputdir": "x"}, "outputdir: unknown key `outputdir` — did you mean `output_dir`?"),
    ({"engine": {"sampling": {"temprature": 1}}}, "engine.sampling.temprature: unknown key `temprature` — did you mean `temperature`?"),
    ({"engine": {"sampling": {"top_p": 0}}}, "engine.sampling.top_p: Input should be greater than 0"),
    ({"engine": {"name": "tgi"}}, "engine.name: Input should be 'hf', 'vllm' or 'openai'"),
    ({"model": {"path": "x", "lora": {"r": 0}}}, "model.lora.r: Input should be greater than 0"),
    ({"env": {"id": "arithmetc-v0"}}, "env.id: Env `arithmetc-v0` not found. Did you mean `arithmetic-v0`"),
    ({"seed": "abc"}, "seed: Input should be a valid integer"),
    ({"engine": {"name": "openai"}}, "engine.name: `openai` can only serve eval"),
])
def test_errors_name_the_field(patch, expected):
    errs = errors_of({**BASE, **patch})
    assert len(errs) == 1, errs
    assert errs[0].startswith(expected), errs


def test_missing_fields_and_bad_top_level():
    errs = errors_of({"stages": [{"sft": {}}]})
    assert "model: required field is missing" in errs and "env: required field is missing" in errs
    assert errors_of(["not", "a", "mapping"])[0].startswith("(top level): a spec is a mapping")


def test_overrides():
    spec = parse_spec(BASE, ["stages[1].grpo.beta=0.2", "stages.0.sft.max_steps=7", "model.lora.r=8",
                             "env.kwargs.operators=+-*", "engine.sampling.stop=[\"</a>\"]", "seed=11"])
    assert spec.stage_list[1].config.beta == 0.2 and spec.stage_list[0].config.max_steps == 7
    assert spec.model.lora.r == 8 and spec.env.kwargs == {"digits": 1, "operators": "+-*"}
    assert spec.engine.sampling.stop == ["</a>"] and spec.seed == 11
    assert BASE["stages"][1]["grpo"]["beta"] == 0.04  # the input is never mutated
    assert errors_of(BASE, ["stages[1].grpo.betaa=0.2"])[0].startswith("stages[1].grpo.betaa: unknown key")
    assert errors_of(BASE, ["stages[4].grpo.beta=1"]) == ["override 'stages[4].grpo.beta=1': stages[4] does not exist (the list has 2 items)"]
    assert errors_of(BASE, ["beta"])[0].startswith("override 'beta': write it as key=value")
    assert errors_of(BASE, ["seed.x=1"])[0] == "override 'seed.x=1': seed is not a mapping"
    with pytest.raises(SpecError):
        apply_overrides({}, ["a[b=1"])


def test_load_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        model: preset:tiny
        stages:
          - sft: {max_steps: 5
    """))
    with pytest.raises(SpecError, match=r"line \d+, column \d+: invalid YAML"):
        load_spec(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpecError, match="invalid YAML"):  # safe_load: no object construction
        load_spec(unsafe)

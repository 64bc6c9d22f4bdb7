"""Run specs: validation with field paths, stage configs from trainers.config, overrides."""

import textwrap

import pytest
import yaml

from rlenv.runspec import SpecError, apply_overrides, load_spec, parse_spec

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
    assert grpo.config.lora is None and not hasattr(sft.config, "temperature")  # sampling: only where generated
    lora = parse_spec({**BASE, "model": {"path": "preset:tiny", "lora": {"r": 4}},
                       "engine": {"name": "hf", "options": {"max_batch_size": 8}},
                       "stages": [{"grpo": {"temperature": 1.2, "engine": {"options": {"prefix_sharing": False}}}},
                                  {"sft": {"lora": None}}]})
    cfg = lora.stage_list[0].config
    assert cfg.lora.r == 4 and cfg.lora.alpha == 32 and cfg.temperature == 1.2  # a stage's own setting wins
    assert cfg.engine.options == {"max_batch_size": 8, "prefix_sharing": False}  # mappings merge key by key
    assert lora.stage_list[1].config.lora is None  # a stage may opt out of the run's LoRA


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 reads `1e-5` (no dot) as a string; the spec must still accept it as a number
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(BASE).replace("max_steps: 5", "max_steps: 5\n    learning_rate: 1e-5"))
    assert load_spec(p).stage_list[0].config.learning_rate == 1e-5


@pytest.mark.parametrize("patch, expected", [
    ({"stages": [{"sft": {}}, {"grpo": {"betaa": 0.1}}]}, "stages[1].grpo.betaa: unknown key `betaa` — did you mean `beta`?"),
    ({"stages": [{"sft": {"learning_rate": -1e-4}}]}, "stages[0].sft.learning_rate: must be > 0, got -0.0001"),
    ({"stages": [{"grpo": {"beta": "high"}}]}, "stages[0].grpo.beta: Input should be a valid number"),
    ({"stages": [{"grpo": {"loss_agg": "mean"}}]}, "stages[0].grpo.loss_agg: unknown loss aggregation `mean` — did you mean `seq-mean`?"),
    ({"stages": [{"grpo": {"policy_loss": "reinforc"}}]}, "stages[0].grpo.policy_loss: unknown policy loss `reinforc` — did you mean `reinforce`?"),
    ({"stages": [{"grpo": {"advantage_estimator": "rlo"}}]}, "stages[0].grpo.advantage_estimator: unknown advantage estimator `rlo` — did you mean `rloo`?"),
    ({"stages": [{"dpo": {"loss_type": "hinj"}}]}, "stages[0].dpo.loss_type: unknown DPO loss `hinj` — did you mean `hinge`?"),
    ({"stages": [{"ppo": {"kl_estimator": "k4"}}]}, "stages[0].ppo.kl_estimator: unknown KL estimator `k4`"),
    ({"stages": [{"grpo": {"lora": {"rr": 4}}}]}, "stages[0].grpo.lora.rr: unknown key `rr` — did you mean `r`?"),
    ({"stages": [{"sfx": {}}]}, "stages[0]: unknown stage `sfx` — did you mean `sft`?"),
    ({"stages": [{"sft": {}, "grpo": {}}]}, "stages[0]: each stage is a mapping with exactly one key"),
    ({"stages": []}, "stages: List should have at least 1 item"),
    ({"outputdir": "x"}, "outputdir: unknown key `outputdir` — did you mean `output_dir`?"),
    ({"engine": {"sampling": {"temprature": 1}}}, "engine.sampling.temprature: unknown key `temprature` — did you mean `temperature`?"),
    ({"engine": {"sampling": {"top_p": 0}}}, "engine.sampling.top_p: must be in (0.0, 1.0], got 0"),
    ({"engine": {"name": "tgi"}}, "engine.name: unknown engine `tgi` — known: hf, openai, vllm"),
    ({"model": {"path": "x", "lora": {"r": 0}}}, "model.lora.r: must be > 0, got 0"),
    ({"logging": {"report_to": ["tensorboard", "wandbb"]}}, "logging.report_to: unknown tracker `wandbb` — did you mean `wandb`?"),
    ({"plugins": ["no_such_module_xyz"]}, "plugins[0]: cannot import `no_such_module_xyz` (ModuleNotFoundError"),
    ({"env": {"id": "arithmetc-v0"}}, "env.id: Env `arithmetc-v0` not found. Did you mean `arithmetic-v0`"),
    ({"seed": "abc"}, "seed: Input should be a valid integer"),
    ({"engine": {"name": "openai"}}, "engine.name: `openai` can only serve eval"),  # reported where it was set
    ({"engine": {"sampling": {"max_new_tokens": 4}}, "stages": [{"grpo": {"overlong_buffer": 4}}]},
     "stages[0].grpo.overlong_buffer: must be < max_new_tokens (4), got 4"),
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


def test_every_registered_name_is_valid_in_a_spec():
    """The registries are the only lists: every name in them validates (nothing else does)."""
    from trainers.advantages import ADVANTAGES
    from trainers.losses import AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES
    from trainers.losses_pref import DPO_LOSSES

    for field, registry, kind in [("policy_loss", POLICY_LOSSES, "grpo"), ("advantage_estimator", ADVANTAGES, "grpo"),
                                  ("loss_agg", AGGREGATIONS, "grpo"), ("kl_estimator", KL_ESTIMATORS, "ppo"),
                                  ("loss_type", DPO_LOSSES, "online_dpo")]:
        for name in registry.names():
            spec = parse_spec({**BASE, "stages": [{kind: {field: name}}]})
            assert getattr(spec.stage_list[0].config, field) == name
    assert parse_spec({**BASE, "stages": [{"grpo": {"policy_loss": "reinforce"}}]}).stage_list[0].config.policy_loss \
        == "reinforce"


def test_plugins_are_imported_before_validation(tmp_path):
    """A spec's `plugins` (a module next to the spec) register names the stages then use."""
    (tmp_path / "spec_plugin_demo.py").write_text(textwrap.dedent("""\
        from trainers.advantages import register_advantage

        @register_advantage("centered_demo")
        def centered(rewards, group_ids, valid=None, *, shift: float = 0.0):
            return rewards - rewards.mean() + shift
    """))
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump({**BASE, "plugins": ["spec_plugin_demo"], "stages": [
        {"grpo": {"advantage_estimator": "centered_demo", "advantage_kwargs": {"shift": 0.5}}}]}))
    try:
        cfg = load_spec(p).stage_list[0].config
        assert cfg.advantage_estimator == "centered_demo" and cfg.advantage_kwargs == {"shift": 0.5}
        bad = load_spec_errors(p, ["stages[0].grpo.advantage_kwargs.shfit=1"])
        assert bad == [f"{p}: stages[0].grpo.advantage_kwargs: advantage estimator `centered_demo` has no option "
                       f"`shfit` — did you mean `shift`? (options are the function's keyword-only parameters)"]
    finally:
        from trainers.advantages import ADVANTAGES

        ADVANTAGES.unregister("centered_demo")


def load_spec_errors(path, overrides=()):
    with pytest.raises(SpecError) as ei:
        load_spec(path, overrides)
    return str(ei.value).splitlines()


def test_old_module_path_is_a_deprecated_alias():
    import rlenv

    with pytest.warns(DeprecationWarning, match="rlenv.runspec"):
        from rlenv.spec import parse_spec as old_parse_spec
    assert old_parse_spec is parse_spec
    assert rlenv.spec("arithmetic-v0").id == "arithmetic-v0"  # still the env registry's lookup

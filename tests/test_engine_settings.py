"""The spec's ``engine`` section reaches the engine, every key of it.

* A walk over the settings schema: each field, set to a non-default value, arrives as a keyword the
  target engine's constructor really takes (a new field that nobody wires fails here).
* A spec with ``engine.options`` and ``engine.sampling.stop`` builds a GRPO trainer whose engine has
  those options, and whose rollouts stop at the stop strings.
* Settings that do not fit the engine are refused with the field named.
"""

from __future__ import annotations

import inspect

import pytest

from rlenv.engines.config import EngineConfig


def engine_arguments(value):
    return EngineConfig.coerce(value).arguments()

#: for each settings field, a valid settings dict that sets it, and the value expected to arrive
NON_DEFAULT = {
    "mode": ({"name": "vllm", "mode": "server"}, "mode", "server"),
    "server_url": ({"name": "vllm", "mode": "server", "server_url": "http://h:1/v1"}, "server_url", "http://h:1/v1"),
    "tensor_parallel_size": ({"name": "vllm", "mode": "server", "tensor_parallel_size": 4},
                             "tensor_parallel_size", 4),
    "data_parallel_size": ({"name": "vllm", "mode": "server", "data_parallel_size": 2}, "data_parallel_size", 2),
    "gpu_memory_utilization": ({"name": "vllm", "gpu_memory_utilization": 0.55}, "gpu_memory_utilization", 0.55),
    "sync_method": ({"name": "vllm", "mode": "server", "sync_method": "disk"}, "sync_method", "disk"),
    "sync_dir": ({"name": "vllm", "mode": "server", "sync_dir": "/shared/sync"}, "sync_dir", "/shared/sync"),
    "options": ({"name": "vllm", "options": {"max_model_len": 512}}, "max_model_len", 512),
}


def _constructor(name: str):
    from rlenv.engines import ENGINES

    import importlib

    module, cls = ENGINES[name]
    return getattr(importlib.import_module(module), cls)


def test_every_setting_reaches_an_engine_constructor_keyword():
    fields = set(EngineConfig.model_fields) - {"name"}
    assert fields == set(NON_DEFAULT), "a setting was added without a check that it reaches the engine"
    for field, (settings, keyword, value) in NON_DEFAULT.items():
        kind, kwargs = engine_arguments(settings)
        assert kwargs.get(keyword) == value, field
        params = inspect.signature(_constructor(kind).__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert keyword in params or (field == "options" and takes_any), (field, keyword)
    kind, kwargs = engine_arguments({"name": "openai", "server_url": "http://h:2/v1"})
    assert kind == "openai" and kwargs == {"base_url": "http://h:2/v1"}
    assert "base_url" in inspect.signature(_constructor("openai").__init__).parameters
    assert engine_arguments({"name": "hf", "options": {"max_batch_size": 3}}) == ("hf", {"max_batch_size": 3})
    # written as an option (as specs did before the field existed), it still lands on the field
    lifted = EngineConfig.model_validate({"name": "vllm", "options": {"gpu_memory_utilization": 0.35}})
    assert lifted.gpu_memory_utilization == 0.35 and lifted.options == {}


@pytest.mark.parametrize("engine, message", [
    ({"name": "hf", "mode": "server"}, "mode: only the vllm engine"),
    ({"name": "vllm", "tensor_parallel_size": 2}, "tensor_parallel_size need mode: server"),
    ({"name": "vllm", "sync_dir": "/x"}, "sync_dir need mode: server"),
    ({"name": "vllm", "mode": "server", "options": {"mode": "server"}}, "options: mode is a field"),
    ({"name": "vllm", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
])
def test_settings_that_do_not_fit_are_refused_naming_the_field(tiny_model_dir, engine, message):
    from rlenv.runspec import SpecError, parse_spec

    spec = {"model": tiny_model_dir, "env": "arithmetic-v0", "stages": [{"sft": {"max_steps": 1}}], "engine": engine}
    with pytest.raises(SpecError, match="engine") as err:
        parse_spec(spec)
    assert message in str(err.value)


@pytest.mark.slow
def test_spec_options_and_stop_strings_reach_the_engine(tiny_model_dir, tmp_path, single_thread):
    from rlenv.runspec import parse_spec
    from trainers import GRPOTrainer

    stops = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789 "]
    spec = parse_spec({
        "model": tiny_model_dir, "env": "arithmetic-v0", "output_dir": str(tmp_path),
        "engine": {"name": "hf", "options": {"max_batch_size": 3, "check_every": 5},
                   "sampling": {"max_new_tokens": 24, "stop": stops}},
        "stages": [{"grpo": {"max_steps": 1, "num_prompts_per_step": 4, "group_size": 2}}]})
    config = spec.stage_list[0].config
    assert config.engine.name == "hf" and config.engine.options == {"max_batch_size": 3, "check_every": 5}
    assert config.stop == stops
    trainer = GRPOTrainer(model=tiny_model_dir, env="arithmetic-v0", config=config)
    assert (trainer.engine.max_batch_size, trainer.engine.check_every) == (3, 5)
    stopped = trainer.rollout(4)
    assert all(not any(s in text for s in stops) for text in stopped.texts)
    trainer.config.stop = []
    free = trainer.rollout(4)  # the same seed and prompts, no stop strings
    assert float(stopped.completion_lengths.float().mean()) < float(free.completion_lengths.float().mean())

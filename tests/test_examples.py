"""Every example spec passes ``rlenv check``; the CPU-sized ones (``preset:tiny``) run, shortened.

The shortened runs start from the demo run's SFT model (tests/test_demo_run.py; shared through the
session's temp dir, so whichever module runs first trains it once) and run every stage of the spec
for two steps, so each stage kind's wiring, export and artifacts are exercised in seconds. Whether
GRPO actually learns is asserted by the demo test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlenv.cli import main
from rlenv.runspec import load_spec

from test_demo_run import run_demo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _model_of(path: Path) -> str:
    model = yaml.safe_load(path.read_text())["model"]
    return model if isinstance(model, str) else model["path"]


CPU_SIZED = [p for p in EXAMPLES if _model_of(p) == "preset:tiny"]
ONLINE = ("grpo", "ppo", "online_dpo")


def test_there_are_examples_of_every_kind():
    kinds = set()
    for p in EXAMPLES:
        spec = load_spec(p)
        kinds.update(s.kind for s in spec.stage_list)
    assert kinds == {"sft", "rm", "grpo", "ppo", "dpo", "online_dpo"}
    assert any(load_spec(p).model.lora for p in EXAMPLES)
    assert any(load_spec(p).env.curriculum for p in EXAMPLES)
    assert {p.name for p in EXAMPLES} - {p.name for p in CPU_SIZED}, "hub-model examples for GPU users"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rlenv_check(path, capsys):
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {path}")


def short_overrides(path: Path, model: str, out: Path) -> list[str]:
    """Two steps per stage, small evals and rollouts, from ``model``, writing to ``out``."""
    ov = [f"model.path={model}", f"output_dir={out}", "logging.logging_steps=1"]
    for i, stage in enumerate(load_spec(path).stage_list):
        at = f"stages[{i}].{stage.kind}"
        ov += [f"{at}.max_steps=2", f"{at}.eval_num_tasks=16", f"{at}.eval_every=0"]
        if stage.kind in ONLINE:
            ov += [f"{at}.num_prompts_per_step=4"]
        else:
            ov += [f"{at}.per_device_train_batch_size=4"]
    return ov


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory, tiny_model_dir, single_thread) -> str:
    out, results = run_demo(tmp_path_factory, tiny_model_dir)
    return results[0]["model_dir"]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in CPU_SIZED if p.name != "arithmetic_sft_grpo.yaml"], ids=lambda p: p.name)
def test_cpu_example_runs_and_writes_artifacts(path, sft_model, tmp_path, capsys):
    from trainers.metrics_log import read_metrics

    out = tmp_path / "run"
    assert main(["train", str(path), *short_overrides(path, sft_model, out)]) == 0
    assert "rlenv train" in capsys.readouterr().out  # the summary table
    summary = json.loads((out / "summary.json").read_text())
    kinds = [s.kind for s in load_spec(path).stage_list]
    assert [r["kind"] for r in summary] == kinds
    for i, r in enumerate(summary):
        stage = out / f"{i}-{r['kind']}"
        assert r["steps"] == 2 and not r["stopped_early"]
        assert (stage / "model" / "config.json").exists()
        assert (stage / "curves.png").exists() and (stage / "metrics.jsonl").exists()
        assert list((stage / "tensorboard").rglob("events.out.tfevents.*"))
        if r["kind"] == "rm":
            assert r["metric"] == "accuracy" and (stage / "pairs.jsonl").exists()
        else:
            assert r["before"] is not None and r["after"] is not None
            assert (stage / "samples.jsonl").exists()
        if r["kind"] == "dpo":
            assert (stage / "pairs.jsonl").exists()
    if load_spec(path).env.curriculum:
        last = [m for m in read_metrics(out / f"{len(kinds) - 1}-{kinds[-1]}" / "metrics.jsonl") if "curriculum/level" in m]
        assert last and last[-1]["curriculum/level"] == 0.0  # two steps: never above raise_at for a full window

"""Every example spec passes ``rlenv check``; every CPU-sized one (``preset:tiny``) runs and *learns*.

The CPU examples share the main job's warm start: the same env and the same first (SFT) stage,
checked below. So their shortened runs start from the demo run's SFT model (tests/test_demo_run.py,
shared through the session's temp dir: whichever module runs first trains it once) and run the
example's later stages with fewer steps, asserting the headline metric of each: the greedy pass rate
rises for the policy stages (grpo, ppo, dpo, online_dpo, with LoRA too), the reward model ranks
held-out verifier pairs, the curriculum moves up a level. The margins sit well below the rises
measured from the demo's seed-0 SFT model; a table over seeds and kernels is still to be written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlenv.cli import main
from rlenv.runspec import load_spec

from test_demo_run import DEMO, run_demo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _model_of(path: Path) -> str:
    model = yaml.safe_load(path.read_text())["model"]
    return model if isinstance(model, str) else model["path"]


CPU_SIZED = [p for p in EXAMPLES if _model_of(p) == "preset:tiny"]
LATER = [p for p in CPU_SIZED if p != DEMO]  # the demo itself is tests/test_demo_run.py's

#: CI steps per later stage and the least rise of the greedy pass rate (128 held-out problems) over
#: the stage's start; from the demo's seed-0 SFT model (0 %) ...
SHORT = {
    "arithmetic_sft_ppo.yaml": {"ppo": 30},
    "arithmetic_sft_dpo.yaml": {"dpo": 40},
    "arithmetic_sft_online_dpo.yaml": {"online_dpo": 30},
    "arithmetic_sft_rm_ppo.yaml": {"rm": 30, "ppo": 30},
    "arithmetic_lora_sft_grpo.yaml": {"grpo": 30},
    "arithmetic_curriculum.yaml": {"grpo": 40},
}
MIN_RISE = {"grpo": 0.4, "ppo": 0.4, "dpo": 0.15, "online_dpo": 0.3}
#: the reward model's accuracy on its held-out verifier pairs
RM_MIN_ACCURACY = 0.8


def test_there_are_examples_of_every_kind():
    kinds = set()
    for p in EXAMPLES:
        spec = load_spec(p)
        kinds.update(s.kind for s in spec.stage_list)
    assert kinds == {"sft", "rm", "grpo", "ppo", "dpo", "online_dpo"}
    assert any(load_spec(p).model.lora for p in EXAMPLES)
    assert any(load_spec(p).env.curriculum for p in EXAMPLES)
    assert {p.name for p in EXAMPLES} - {p.name for p in CPU_SIZED}, "hub-model examples for GPU users"
    assert set(SHORT) == {p.name for p in LATER}, "every CPU example has its CI run"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rlenv_check(path, capsys):
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {path}")


def _warm_start(path: Path) -> tuple:
    raw = yaml.safe_load(path.read_text())
    (kind, settings), = raw["stages"][0].items()
    settings = {k: v for k, v in (settings or {}).items() if k not in ("lora", "save_steps")}
    return raw["env"]["id"], raw["env"].get("kwargs", {}), kind, settings


@pytest.mark.parametrize("path", LATER, ids=lambda p: p.name)
def test_cpu_examples_share_the_main_jobs_warm_start(path):
    assert _warm_start(path) == _warm_start(DEMO)


def later_stages(path: Path, model: str, out: Path) -> dict:
    """The example's spec after its SFT stage, from ``model``, shortened, writing to ``out``."""
    raw = yaml.safe_load(path.read_text())
    raw["stages"] = raw["stages"][1:]
    raw["model"] = dict(raw["model"], path=model) if isinstance(raw["model"], dict) else model
    raw.update(output_dir=str(out), logging={"report_to": "tensorboard", "logging_steps": 1})
    for stage in raw["stages"]:
        (kind, settings), = stage.items()
        settings.update(max_steps=SHORT[path.name][kind], progress_bar=False, save_steps=0)
    return raw


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory, tiny_model_dir, single_thread) -> str:
    out, results = run_demo(tmp_path_factory, tiny_model_dir)
    return results[0]["model_dir"]


@pytest.mark.slow
@pytest.mark.parametrize("path", LATER, ids=lambda p: p.name)
def test_cpu_example_learns(path, sft_model, tmp_path):
    from trainers.metrics_log import read_metrics
    from trainers.pipeline import run_spec

    out = tmp_path / "run"
    raw = later_stages(path, sft_model, out)
    results = run_spec(raw, print_summary=False)
    assert [r["kind"] for r in results] == [next(iter(s)) for s in raw["stages"]]
    assert [r["kind"] for r in json.loads((out / "summary.json").read_text())] == [r["kind"] for r in results]
    for r in results:
        stage = out / f"{r['index']}-{r['kind']}"
        assert r["steps"] == SHORT[path.name][r["kind"]] and not r["stopped_early"]
        assert (stage / "model" / "config.json").exists() and (stage / "curves.png").exists()
        assert list((stage / "tensorboard").rglob("events.out.tfevents.*"))
        if r["kind"] == "rm":
            assert (stage / "pairs.jsonl").exists()
            assert r["metric"] == "accuracy" and r["after"] >= RM_MIN_ACCURACY, r
            continue
        assert (stage / "samples.jsonl").exists()
        assert r["after"] >= r["before"] + MIN_RISE[r["kind"]], (path.name, r["kind"], r["before"], r["after"])
    if load_spec(path).env.curriculum:
        levels = [m["curriculum/level"] for m in read_metrics(out / "0-grpo" / "metrics.jsonl")
                  if "curriculum/level" in m]
        assert levels[0] == 0.0 and levels[-1] == 1.0, levels  # fixed level 0 quickly, moved up

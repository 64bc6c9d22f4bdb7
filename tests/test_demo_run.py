"""The README's first command end to end: ``rlenv train examples/arithmetic_sft_grpo.yaml`` on CPU.

One run (shared with tests/test_examples.py through the session's temp dir: a finished stage is
skipped on a rerun) — GRPO must raise the greedy pass rate over the SFT start, and the run must
leave its artifacts; then ``rlenv eval`` scores the exported GRPO model from the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlenv.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "arithmetic_sft_grpo.yaml"
#: GRPO must add at least this much greedy pass rate (128 eval tasks) over its SFT start
MIN_RISE = 0.10


def run_demo(tmp_path_factory, tiny_model_dir: str) -> tuple[Path, list]:
    """Run the demo spec once per session (its own model dir, no ~/.cache); returns (output dir, results)."""
    from trainers.pipeline import run_spec

    out = tmp_path_factory.getbasetemp() / "demo_arithmetic_sft_grpo"
    results = run_spec(str(DEMO), [f"model={tiny_model_dir}", f"output_dir={out}", "logging.report_to=tensorboard"],
                       print_summary=True)
    return out, results


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir, single_thread):
    return run_demo(tmp_path_factory, tiny_model_dir)


@pytest.mark.slow
def test_grpo_raises_pass_rate_over_sft_start(demo, capsys):
    out, results = demo
    sft, grpo = results
    assert sft["kind"] == "sft" and grpo["kind"] == "grpo"
    # SFT starts from a random model (0 %) and is stopped early on purpose
    assert sft["before"] == 0.0 and 0.05 <= sft["after"] <= 0.6, sft
    assert grpo["before"] == pytest.approx(sft["after"])  # same model, same eval tasks
    assert grpo["after"] >= grpo["before"] + MIN_RISE, (grpo["before"], grpo["after"])


@pytest.mark.slow
def test_run_leaves_its_artifacts(demo):
    from trainers.metrics_log import read_metrics

    out, results = demo
    summary = json.loads((out / "summary.json").read_text())
    assert [r["kind"] for r in summary] == ["sft", "grpo"]
    for r, name in zip(results, ("0-sft", "1-grpo")):
        stage = out / name
        assert (stage / "stage.json").exists()
        assert (stage / "model" / "config.json").exists() and r["model_dir"] == str(stage / "model")
        assert any((stage / "model").glob("*.safetensors"))
        assert list((stage / "checkpoints").iterdir()), "a final checkpoint per stage"
        assert (stage / "curves.png").stat().st_size > 1000
        assert list((stage / "tensorboard").rglob("events.out.tfevents.*"))
        metrics = read_metrics(stage / "metrics.jsonl")
        evals = [m for m in metrics if "eval/pass_rate" in m]
        assert evals[0]["step"] == 0 and evals[-1]["step"] == r["steps"]
        samples = [json.loads(line) for line in (stage / "samples.jsonl").read_text().splitlines()]
        assert {"prompt", "completion", "reward", "correct", "step"} <= set(samples[0])
        assert {s["step"] for s in samples} == {e["step"] for e in evals}
    grpo_metrics = read_metrics(out / "1-grpo" / "metrics.jsonl")
    train = [m for m in grpo_metrics if "reward" in m]
    assert train and all(0.0 <= m["reward"] <= 1.0 for m in train)


@pytest.mark.slow
def test_rlenv_eval_on_the_demo_checkpoint(demo, tmp_path, capsys):
    from rlenv.runspec import load_spec

    out, results = demo
    env = load_spec(DEMO).env
    samples = tmp_path / "eval.jsonl"
    kwargs = [a for k, v in env.kwargs.items() for a in ("--env-kwarg", f"{k}={v}")]
    rc = main(["eval", env.id, "--model", results[1]["model_dir"], "-n", "4", "-k", "1,4", "--num-tasks", "16",
               "--max-new-tokens", "12", "--out", str(samples), *kwargs])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["pass@1"] <= result["pass@4"] <= 1.0
    assert result["pass@4"] > 0.0  # the trained model solves some of 16 problems in 4 tries
    lines = samples.read_text().splitlines()
    assert len(lines) == 16 * 4

"""Stages from a spec: sft → rm → dpo run in order, each from the previous stage's model, each
writing its model, checkpoint, metrics, TensorBoard events, curve and samples; a summary at the end;
a rerun skips finished stages."""

from __future__ import annotations

import json

import pytest

from trainers.metrics_log import read_metrics
from trainers.pipeline import run_spec

EVAL = {"eval_num_tasks": 4, "eval_max_new_tokens": 8, "save_steps": 2}


@pytest.mark.slow
def test_sft_rm_dpo_pipeline(micro_model_dir, tmp_path, capsys):
    spec = {
        "model": micro_model_dir,
        "env": {"id": "arithmetic-v0", "kwargs": {"digits": 1, "operators": "+", "system_prompt": None}},
        "stages": [
            {"sft": {"max_steps": 3, "learning_rate": 3e-3, "per_device_train_batch_size": 8, **EVAL}},
            {"rm": {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 4, **EVAL}},
            {"dpo": {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 4, **EVAL}},
        ],
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
    }
    results = run_spec(spec, ["stages[0].sft.max_steps=4"])  # overrides apply before validation
    assert [r["kind"] for r in results] == ["sft", "rm", "dpo"]
    assert results[0]["steps"] == 4
    sft, rm, dpo = (tmp_path / "run" / d for d in ("0-sft", "1-rm", "2-dpo"))
    for d in (sft, rm, dpo):
        assert (d / "model" / "config.json").exists()
        assert (d / "checkpoints" / "checkpoint-2").is_dir()
        assert any((d / "tensorboard").iterdir())
        assert (d / "curves.png").stat().st_size > 0
        assert any("loss" in r for r in read_metrics(d / "metrics.jsonl"))
        assert (d / "stage.json").exists()
    assert (sft / "samples.jsonl").exists() and (dpo / "samples.jsonl").exists()
    assert (rm / "pairs.jsonl").exists() and (dpo / "pairs.jsonl").exists()
    # the rm stage trained a sequence classifier and left the policy alone: dpo started from sft
    assert json.loads((rm / "model" / "config.json").read_text())["architectures"][0].endswith("SequenceClassification")
    assert results[2]["model_dir"] == str(dpo / "model")
    assert results[0]["before"] is not None and results[0]["after"] is not None
    assert results[1]["metric"] == "accuracy" and results[1]["after"] is not None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["kind"] for s in summary] == ["sft", "rm", "dpo"]
    printed = capsys.readouterr().out
    assert "sft" in printed and "dpo" in printed and "%" in printed

    again = run_spec(spec, print_summary=False)  # finished stages are not run twice
    assert all(r.get("skipped") for r in again)


def test_bad_spec_is_one_clear_error(tmp_path):
    from rlenv.runspec import SpecError

    spec = {"model": "preset:micro", "env": "arithmetic-v0", "stages": [{"dpo": {"beta": -1}}],
            "output_dir": str(tmp_path)}
    with pytest.raises(SpecError, match=r"stages\[0\]\.dpo\.beta"):
        run_spec(spec)

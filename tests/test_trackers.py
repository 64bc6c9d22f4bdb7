"""Trackers through accelerate's tracking API: ``report_to`` takes what a TRL user passes; a short
GRPO stage with ``report_to: [tensorboard, wandb]`` (wandb offline) leaves every metric of
``metrics.jsonl`` in TensorBoard's event files and in wandb's offline run file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from trainers.config import GRPOConfig, SFTConfig
from trainers.metrics_log import read_metrics, resolve_trackers


def test_report_to_accepts_what_trl_users_pass():
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    assert SFTConfig(report_to="none").report_to == [] and SFTConfig(report_to=None).report_to == []
    assert SFTConfig(report_to="wandb").report_to == ["wandb"]
    assert GRPOConfig(report_to=["tensorboard", "wandb"]).report_to == ["tensorboard", "wandb"]
    available = [str(t) for t in get_available_trackers()]
    assert resolve_trackers(["all"]) == available and {"tensorboard", "wandb"} <= set(available)
    with pytest.raises(ValueError, match=r"SFTConfig.report_to: unknown tracker `tensorbord` — did you mean "
                                         r"`tensorboard`\?"):
        SFTConfig(report_to=["tensorbord"])
    absent = [str(t) for t in LoggerType if str(t) != "all" and str(t) not in available]
    if absent:  # asked for by name but not installed: say what to install, do not drop it silently
        with pytest.raises(ImportError, match=f"pip install {absent[0]}"):
            resolve_trackers([absent[0]])


def _tensorboard_scalars(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict = {}
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def _wandb_records(path: Path) -> list:
    """The protobuf records of a wandb run file (a LevelDB-style log: 7-byte file header, then
    records of ``crc32 u32, length u16, type u8`` + data in 32 KiB blocks; type 1 full, 2-4 parts)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of the block is padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


@pytest.mark.slow
def test_grpo_stage_logs_to_tensorboard_and_wandb(micro_model_dir, tmp_path, monkeypatch):
    from trainers.pipeline import run_spec

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = {"model": micro_model_dir, "env": {"id": "arithmetic-v0", "kwargs": {"digits": 1}},
            "stages": [{"grpo": {"max_steps": 3, "learning_rate": 1e-3, "num_prompts_per_step": 2, "group_size": 2,
                                 "eval_num_tasks": 2, "eval_max_new_tokens": 4, "progress_bar": False}}],
            "engine": {"sampling": {"max_new_tokens": 6}},
            "logging": {"report_to": ["tensorboard", "wandb"], "project": "rlenv-trackers-test"},
            "output_dir": str(tmp_path / "run")}
    run_spec(spec, print_summary=False)
    stage = tmp_path / "run" / "0-grpo"
    records = read_metrics(stage / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    expected = [(r["step"], k, v) for r in records for k, v in r.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert {"loss", "reward", "eval/pass_rate"} <= {k for _, k, _ in expected}

    tb = _tensorboard_scalars(stage / "tensorboard" / "rlenv-trackers-test")
    for step, key, value in expected:
        assert tb[key][step] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, step)

    (run_file,) = (stage / "wandb").glob("offline-run-*/run-*.wandb")
    rows: dict = {}
    config: dict = {}
    run_record = None
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            rows.setdefault(items["_step"], {}).update(items)
        elif kind == "run":
            run_record = rec.run
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
    assert run_record.project == "rlenv-trackers-test" and run_record.display_name.endswith("run/0-grpo")
    assert config["learning_rate"] == 1e-3 and config["group_size"] == 2  # the stage's settings, as hyperparameters
    for step, key, value in expected:
        assert rows[step][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, step)

"""What parallelism runs is what was asked for, or the run stops before its first step and says why.

* :func:`trainers.distributed.requested` reads what ``accelerate launch`` asked for from the variables
  its config sets; a mismatch with what accelerate set up (sharding asked, something else built;
  several processes launched, each alone) is a :class:`DistributedSetupError` naming both.
* Unsupported combinations stop before the first step, under a real two-rank launch: an FSDP
  version 1 config, and PPO (a value head next to the policy) under FSDP2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scale_worker import launch  # noqa: E402

from trainers.distributed import (DistributedSetupError, check_parallelism, collective_timeout,  # noqa: E402
                                  describe, requested)


@pytest.mark.parametrize("env, expected", [
    ({}, "none"),
    ({"WORLD_SIZE": "2"}, "ddp"),
    ({"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "fsdp2"),
    ({"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true"}, "fsdp1"),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "zero3"),
])
def test_requested_reads_the_launcher(monkeypatch, env, expected):
    for var in ("WORLD_SIZE", "ACCELERATE_USE_FSDP", "FSDP_VERSION", "ACCELERATE_USE_DEEPSPEED",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert requested() == expected


def test_a_mismatch_with_what_was_asked_stops_the_run(monkeypatch):
    from accelerate import Accelerator

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    acc = Accelerator(cpu=True)
    assert describe(acc) == {"type": "none", "world_size": 1, "backend": "none"}
    with pytest.raises(DistributedSetupError, match="asked for fsdp2 but accelerate set up none"):
        check_parallelism(acc, "fsdp2")
    with pytest.raises(DistributedSetupError, match="asks for FSDP version 1, which rlenv does not support"):
        check_parallelism(acc, "fsdp1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched twice, but this accelerator trains alone
    with pytest.raises(DistributedSetupError, match="2 processes were launched but accelerate set up 1"):
        check_parallelism(acc, "ddp")


def test_collective_timeout_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("RLENV_COLLECTIVE_TIMEOUT", "45")
    assert collective_timeout() == 45.0
    monkeypatch.setenv("RLENV_COLLECTIVE_TIMEOUT", "soon")
    with pytest.raises(DistributedSetupError, match="RLENV_COLLECTIVE_TIMEOUT"):
        collective_timeout()


@pytest.mark.slow
def test_unsupported_combinations_stop_before_the_first_step(micro_model_dir, tmp_path):
    config = yaml.safe_load((HERE.parent / "examples" / "accelerate" / "fsdp.yaml").read_text())
    config["fsdp_config"]["fsdp_version"] = 1
    fsdp1 = tmp_path / "fsdp1.yaml"
    fsdp1.write_text(yaml.safe_dump(config))
    plan = {"model": micro_model_dir, "out": str(tmp_path / "a"), "runs": [{"name": "g", "kind": "grpo"}]}
    proc, results = launch(str(fsdp1), plan, tmp_path, timeout=600)
    assert proc.returncode != 0 and not results
    assert "DistributedSetupError: the accelerate config asks for FSDP version 1" in proc.stderr

    plan = {"model": micro_model_dir, "out": str(tmp_path / "b"), "runs": [{"name": "p", "kind": "ppo"}]}
    proc, results = launch(str(HERE.parent / "examples" / "accelerate" / "fsdp.yaml"), plan, tmp_path, timeout=600)
    assert proc.returncode != 0 and not results
    assert "PPOTrainer trains extra modules (value_head) next to the policy" in proc.stderr
    assert not (tmp_path / "b" / "p" / "metrics.jsonl").exists()  # stopped before the first step

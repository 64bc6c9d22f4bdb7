"""Collectives stay in step when the ranks' data do not: two gloo ranks on CPU.

* The empty-micro-batch hang, reproduced: rank 0 draws 1 prompt × 2 samples, rank 1 draws 2 × 2,
  with 4 micro-batches per step — rank 0 has 2 empty ones. The code before the fix returned
  ``sum(p.sum() * 0)`` for those without calling the DDP-wrapped model, so rank 0 skipped the gradient
  all-reduce that rank 1 waited in: with ``RLENV_COLLECTIVE_TIMEOUT=20`` that run fails with a
  :class:`trainers.distributed.CollectiveTimeout` naming the step, the phase and the rank. The fixed
  code (placeholder micro-batches) completes the same run with identical weights on both ranks.
* FSDP2 with uneven work: dynamic sampling where rank 1's rewards are all equal (so it resamples
  every round while rank 0 is done at once), uneven rows per rank (so placeholder micro-batches),
  β > 0 (the sharded reference scores in lockstep) and an evaluation — completes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scale_worker import launch  # noqa: E402

DDP = str(HERE.parent / "examples" / "accelerate" / "ddp.yaml")
FSDP = str(HERE.parent / "examples" / "accelerate" / "fsdp.yaml")
UNEVEN = {"kind": "grpo", "prompts_by_rank": [1, 2], "group_size": 2, "gas": 4}


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(folder) / "model.safetensors")


@pytest.mark.slow
def test_empty_micro_batch_hang_reproduced_then_fixed(micro_model_dir, tmp_path):
    env = {"RLENV_COLLECTIVE_TIMEOUT": "20"}
    old, _ = launch(DDP, {"model": micro_model_dir, "out": str(tmp_path / "old"),
                          "runs": [dict(UNEVEN, name="old", old_empty_path=True)]}, tmp_path, env=env, timeout=600)
    assert old.returncode != 0
    # instead of hanging, a rank names itself, the step and the phase: rank 1 waits in the gradient
    # all-reduce of step 1 that rank 0 skipped, rank 0 in the next collective (which of the two times
    # out first is a race; the launcher then stops the other)
    assert re.search(r"CollectiveTimeout: rank [01] of 2: a collective at step 1 \((training step|metrics "
                     r"reduction)\) did not complete", old.stderr), old.stderr[-3000:]

    new, results = launch(DDP, {"model": micro_model_dir, "out": str(tmp_path / "new"),
                                "runs": [dict(UNEVEN, name="new"), dict(UNEVEN, name="lora", lora=True)]},
                          tmp_path, env=env, timeout=600)
    assert new.returncode == 0, new.stderr[-3000:]
    for name in ("new", "lora"):  # full fine-tuning, and a LoRA policy (placeholders through peft)
        ranks = results[name]
        assert [r["rank_metrics"][0]["rows"] for r in ranks] == [2, 4]  # the uneven split really happened
        assert all(r["distributed"]["type"] == "ddp" for r in ranks)
        trained, start = _weights(ranks[0]["model_dir"]), _weights(micro_model_dir)
        assert max(float((trained[k] - start[k]).abs().max()) for k in start) > 1e-4, name  # the step trained


@pytest.mark.slow
def test_fsdp2_uneven_dynamic_sampling_with_reference_and_eval(micro_model_dir, tmp_path):
    run = dict(UNEVEN, name="dynamic", dynamic=True, rounds=2, constant_reward_on_rank1=True, beta=0.1,
               eval_tasks=2, steps=2)
    proc, results = launch(FSDP, {"model": micro_model_dir, "out": str(tmp_path), "runs": [run]}, tmp_path,
                           env={"RLENV_COLLECTIVE_TIMEOUT": "120"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = results["dynamic"]
    assert all(r["distributed"] == {"type": "fsdp2", "world_size": 2, "backend": "gloo"} for r in ranks)
    rounds = [[m["dynamic/rounds"] for m in r["rank_metrics"]] for r in ranks]
    assert rounds[1] == [2.0, 2.0]  # rank 1 found nothing informative and used every round, each step
    assert rounds[0] != rounds[1]  # rank 0 ran fewer rollouts: the ranks did not generate in lockstep
    assert ranks[0]["steps"] == 2 and len(ranks[0]["eval"]) == 2  # eval before and after, on FSDP2
    trained = _weights(ranks[0]["model_dir"])
    assert all(torch.isfinite(v).all() for v in trained.values())

"""Distribution is real: ``accelerate launch --num_processes 2`` on CPU (gloo, DDP) runs a DPO step
and a GRPO step; both ranks step with the same gradient and end with identical weights, and the DPO
step's gradient equals one single-process step's on the union of the two ranks' batches (the
gradients were all-reduced and averaged)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_steps(micro_model_dir, tmp_path, single_thread):
    kinds = ["dpo"] + (["grpo"] if importlib.util.find_spec("trainers.grpo") else [])
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(HERE / "dist_step.py"), ",".join(kinds), micro_model_dir, str(tmp_path), "2"]
    # ACCELERATE_USE_CPU: on a machine without GPUs the launched ranks form a gloo CPU group
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    for kind in kinds:
        ranks = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["rank"])
        assert [r["rank"] for r in ranks] == [0, 1], kind
        assert all(r["world"] == 2 and r["distributed_type"] == "DistributedType.MULTI_CPU" for r in ranks)
        assert ranks[0]["after"] == ranks[1]["after"], f"{kind}: ranks diverged"
        assert ranks[0]["after"] != ranks[0]["before"], f"{kind}: the step changed nothing"
        w0 = torch.load(tmp_path / kind / "weights_rank0.pt", weights_only=True)
        w1 = torch.load(tmp_path / kind / "weights_rank1.pt", weights_only=True)
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
        g0 = torch.load(tmp_path / kind / "grads_rank0.pt", weights_only=True)
        g1 = torch.load(tmp_path / kind / "grads_rank1.pt", weights_only=True)
        assert g0 and g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0), kind

    # what DDP promises: every rank steps with the mean of the ranks' gradients. One process with a
    # batch of 4 sees the same rows as 2 ranks x 2 (the same seeded order), and DPO's loss is a mean
    # over pairs, so its gradient is that mean. The weights after an Adam step are no fair witness:
    # Adam's first update is ~lr*sign(g), so a gradient within float noise of 0 flips its weight by 2*lr.
    sys.path.insert(0, str(HERE))
    from dist_step import PAIRS, record_gradients

    from trainers.config import DPOConfig
    from trainers.dpo import DPOTrainer

    single = DPOTrainer(micro_model_dir, DPOConfig(output_dir=str(tmp_path / "single"), max_steps=1,
                                                   learning_rate=1e-2, report_to="none", progress_bar=False,
                                                   lr_scheduler="constant", per_device_train_batch_size=4, beta=0.1,
                                                   seed=0),
                        train_dataset=PAIRS)
    expected = record_gradients(single)
    single.train()
    averaged = torch.load(tmp_path / "dpo" / "grads_rank0.pt", weights_only=True)
    assert set(averaged) == set(expected) and expected
    scale = max(float(g.abs().max()) for g in expected.values())
    for k, g in expected.items():
        # the two sides sum the same per-row terms in another order (one batch of 4 vs two batches of
        # 2 averaged by the all-reduce); float32 reassociation moves a sum by a few ulps of its largest
        # terms: measured 4.6e-7 of the largest gradient entry (ATEN_CPU_CAPABILITY default and avx2),
        # so 1e-5 of it (~80 ulps) leaves 20x room, while a wrong reduction (a sum instead of the mean,
        # or one rank's gradient alone) is off by O(scale)
        torch.testing.assert_close(averaged[k], g, rtol=1e-4, atol=1e-5 * scale, msg=k)
    assert scale > 1e-3  # the gradients are far from zero, so the comparison has teeth

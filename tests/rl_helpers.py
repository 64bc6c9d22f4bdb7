"""The pinned start of the online-trainer learning tests (GRPO, PPO, online DPO, the faulty-verifier
run) and what they share.

The start is ``tests/data/rl_start/``: the ``tiny`` preset after 900 SFT steps on two-digit
addition, trained once by ``tests/data/make_rl_start.py`` and shipped (safetensors + tokenizer,
loaded with ``from_pretrained`` like any model). Trained afresh in each session, that SFT ended on
the tiny model's phase transition, where another CPU's rounding or fused AdamW moved its greedy
pass rate from 76 % to 12 % and every learning test with it; pinned, it is the same bytes
everywhere, and the learning tests measure only the RL stage.

Each learning test's core is a function ``learn(start, out, seed, fused_adamw)`` in its test
module, so ``tests/measure_learning_spread.py`` can run it over seeds, AdamW kernels and CPU
kernel sets (``ATEN_CPU_CAPABILITY``) — the spread its margin is set from.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

import pytest
import torch

#: the pinned start (see tests/data/make_rl_start.py)
START_DIR = Path(__file__).parent / "data" / "rl_start"
#: eval settings shared by the learning tests (the loop's before/after evaluation)
EVAL = dict(eval_num_tasks=128, eval_max_new_tokens=12, per_device_eval_batch_size=128)
#: the procedural task every learning test uses: two-digit addition, no system prompt (short prompts)
ENV_KWARGS = dict(digits=2, operators="+", system_prompt="")


def make_env():
    """``arithmetic-v0`` with :data:`ENV_KWARGS`."""
    import rlenv

    return rlenv.make("arithmetic-v0", **ENV_KWARGS)


def grpo_config(out, seed: int = 0, fused_adamw: Optional[bool] = None, **overrides):
    """The GRPO learning recipe (test_grpo.py, and test_faulty_run.py with faults): 30 steps of
    8 prompts x 8 samples, lr 3e-5, no KL, 16 new tokens, from the pinned start."""
    from trainers.config import GRPOConfig

    kw = dict(output_dir=str(out), max_steps=30, learning_rate=3e-5, num_prompts_per_step=8, group_size=8,
              max_new_tokens=16, beta=0.0, report_to="none", progress_bar=False, seed=seed, fused_adamw=fused_adamw,
              **EVAL)
    return GRPOConfig(**dict(kw, **overrides))


def start_info() -> dict:
    """``start.json`` of the pinned start: its recipe and measured greedy pass rate."""
    return json.loads((START_DIR / "start.json").read_text())


def fused_adamw() -> Optional[bool]:
    """The AdamW kernel the learning tests run with: ``$RLENV_TEST_FUSED_ADAMW`` = ``1`` (fused) /
    ``0`` (per-tensor), unset = the trainers' default. Lets one check the tests under both."""
    value = os.environ.get("RLENV_TEST_FUSED_ADAMW", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"RLENV_TEST_FUSED_ADAMW must be 0, 1 or unset, got {value!r}")
    return None if value == "" else value == "1"


def eval_pass_rates(result: dict) -> tuple[float, float]:
    """``(before, after)`` greedy pass rates from a trainer's ``train()`` result (the loop evaluates
    before the first and after the last step, on the same held-out tasks)."""
    hist = [h for h in result["eval_history"] if "eval/pass_rate" in h]
    return hist[0]["eval/pass_rate"], hist[-1]["eval/pass_rate"]


def check_start(before: float) -> None:
    """The start evaluates where ``start.json`` says (a change of eval code or of the shipped weights
    shows here, not as a mysterious learning failure). Greedy decoding of the same weights can flip
    a near-tie under other CPU kernels, so a few of the 128 tasks of room."""
    recorded = start_info()["pass_rate"]
    assert abs(before - recorded) <= 4 / 128, f"the pinned start evaluated at {before:.3f}, recorded {recorded:.3f}"


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
def rl_start() -> str:
    """Path of the pinned start of the online learning tests."""
    if not (START_DIR / "model.safetensors").exists():
        raise FileNotFoundError(f"{START_DIR} is missing its weights; rebuild it with "
                                f"python tests/data/make_rl_start.py")
    return str(START_DIR)

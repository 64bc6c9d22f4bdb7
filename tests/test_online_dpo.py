"""OnlineDPOTrainer: best-vs-worst pairing and learning on ``arithmetic-v0`` (slow)."""

from __future__ import annotations

import pytest
import torch

from tests.rl_helpers import one_thread, rl_start  # noqa: F401  (the pinned start fixture)
from trainers.config import OnlineDPOConfig
from trainers.online_dpo import OnlineDPOTrainer, best_worst_pairs


def test_best_worst_pairs_skip_ties_and_invalid():
    r = torch.tensor([0.0, 1.0, 0.5, 1.0, 1.0, 0.0, 9.0])
    g = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    valid = torch.tensor([True, True, True, True, True, True, False])
    chosen, rejected = best_worst_pairs(r, g, valid)
    # group 0: best row 1, worst row 0; group 1 ties; group 2 has one valid row
    assert chosen.tolist() == [1] and rejected.tolist() == [0]


@pytest.mark.slow
def test_online_dpo_step_runs_and_logs_pairs(micro_model_dir, tmp_path):
    cfg = OnlineDPOConfig(output_dir=str(tmp_path), max_steps=1, learning_rate=1e-3, num_prompts_per_step=3,
                          group_size=4, max_new_tokens=6, report_to="none", progress_bar=False, eval_num_tasks=0,
                          gradient_accumulation_steps=2)
    trainer = OnlineDPOTrainer(micro_model_dir, "arithmetic-v0", cfg,
                               verifiers=[lambda c, t: float(len(c) % 2)])
    m = trainer.train()["metrics"]
    assert 0 <= m["pairs"] <= 3 and "tie_group_frac" in m
    if m["pairs"]:
        assert m["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)  # first step: policy == reference


#: what the learning test requires of the greedy pass rate (128 held-out tasks); see its docstring
ONLINE_DPO_MIN_GAIN, ONLINE_DPO_MIN_END = 0.10, 0.85


def learn(start: str, out, seed: int = 0, fused_adamw=None, **overrides) -> dict:
    """The learning test's core: 30 online DPO steps (8 prompts x 8 samples, best vs worst, β 0.1,
    lr 5e-5) from the pinned start on two-digit addition; returns ``train()``'s result."""
    from tests.rl_helpers import EVAL, make_env

    kw = dict(output_dir=str(out), max_steps=30, learning_rate=5e-5, num_prompts_per_step=8, group_size=8,
              max_new_tokens=16, beta=0.1, report_to="none", progress_bar=False, seed=seed, fused_adamw=fused_adamw,
              **EVAL)
    with one_thread():
        return OnlineDPOTrainer(start, make_env(), OnlineDPOConfig(**dict(kw, **overrides))).train()


@pytest.mark.slow
def test_online_dpo_raises_pass_rate_over_sft_start(rl_start, tmp_path):  # noqa: F811
    """Online DPO raises the pinned start's greedy pass rate, pairs ranked by the verifier alone.

    Spread (tests/measure_learning_spread.py): SPREAD."""
    from tests.rl_helpers import check_start, eval_pass_rates, fused_adamw

    before, after = eval_pass_rates(learn(rl_start, tmp_path, seed=0, fused_adamw=fused_adamw()))
    print(f"online DPO pass rate {before:.3f} -> {after:.3f}")
    check_start(before)
    assert after - before >= ONLINE_DPO_MIN_GAIN and after >= ONLINE_DPO_MIN_END, (before, after)

"""GRPOTrainer: reward shaping and masks, dynamic sampling, exact resume, and learning on
``arithmetic-v0`` from a short SFT warm start (slow)."""

from __future__ import annotations

import torch
import pytest

from rlenv.batch import RolloutBatch
from trainers.config import GRPOConfig
from trainers.grpo import GRPOTrainer
from trainers.metrics_log import read_metrics
from tests.rl_helpers import one_thread, sft_start  # noqa: F401  (the shared SFT warm-start fixture)
from trainers.online import (build_env, gather_rows, informative_groups, micro_batches_by_length,
                             overlong_penalty, shape_rewards)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():  # see tests.rl_helpers.one_thread
        yield


def _batch(rewards, groups, failed=None, truncated=None, lengths=None):
    B = len(rewards)
    lengths = torch.tensor(lengths or [3] * B)
    T = 2 + int(lengths.max())
    mask = torch.zeros(B, T)
    for b, n in enumerate(lengths.tolist()):
        mask[b, 2:2 + n] = 1
    return RolloutBatch(
        input_ids=torch.arange(B * T).reshape(B, T) % 250, attention_mask=(mask.sum(-1, keepdim=True) > -1).long()
        .expand(B, T).clone() * 0 + torch.cat([torch.ones(B, 2), mask[:, 2:]], 1).long(),
        loss_mask=mask, sampling_logprobs=-mask, rewards=torch.tensor(rewards, dtype=torch.float32),
        group_ids=torch.tensor(groups), prompt_lengths=torch.full((B,), 2), completion_lengths=lengths,
        failed=torch.tensor(failed or [False] * B), truncated=torch.tensor(truncated or [False] * B))


def test_shape_rewards_masks_failures_truncation_and_overlong():
    b = _batch([1.0, 0.0, 1.0, 1.0], [0, 0, 0, 0], failed=[False, True, False, False],
               truncated=[False, False, True, False], lengths=[2, 3, 8, 7])
    r, valid = shape_rewards(b, max_new_tokens=8, mask_truncated=True, overlong_buffer=4, overlong_penalty_value=1.0)
    assert valid.tolist() == [True, False, False, True]
    # lengths 7 and 8 with limit 8, buffer 4: penalties -(7-4)/4 and -1
    torch.testing.assert_close(r, torch.tensor([1.0, 0.0, 0.0, 0.25]))
    torch.testing.assert_close(overlong_penalty(torch.tensor([4, 6]), 8, 4), torch.tensor([0.0, -0.5]))


def test_informative_groups_drop_all_equal():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    assert informative_groups(r, g, torch.ones(6, dtype=torch.bool)).tolist() == [False, False, True, True,
                                                                                   False, False]
    # a failed row does not make its group informative
    valid = torch.tensor([True, True, True, False, True, True])
    assert not informative_groups(r, g, valid)[2]


def test_length_sorted_micro_batches_trim_padding():
    b = _batch([0.0] * 4, [0, 0, 1, 1], lengths=[1, 6, 2, 5])
    chunks = micro_batches_by_length(b.attention_mask.sum(-1), torch.arange(4), 2)
    assert [c.tolist() for c in chunks] == [[0, 2], [3, 1]]
    mb = gather_rows(b, chunks[0], {"mask": b.loss_mask}, {})
    assert mb["input_ids"].shape == (2, 4) and mb["start"] == 2 and mb["mask"].shape == (2, 2)


def test_build_env_errors_and_verifiers():
    with pytest.raises(ValueError, match="env="):
        build_env(None)
    with pytest.raises(ValueError, match="verifiers"):
        build_env([{"prompt": "1+1?", "answer": "2"}])
    env = build_env([{"prompt": "1+1?", "answer": "2"}], verifiers=[lambda c, t: float(c == t.answer)])
    env.reset(seed=0)
    assert env.step("2")[1] == 1.0


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-3, num_prompts_per_step=2, group_size=4,
                max_new_tokens=6, report_to="none", progress_bar=False, eval_num_tasks=0,
                seed=3)
    base.update(kw)
    return GRPOConfig(**base)


def _odd_length(completion, task):
    return float(len(completion) % 2)


@pytest.mark.slow
def test_dynamic_sampling_refills_with_informative_groups(micro_model_dir, tmp_path):
    trainer = GRPOTrainer(micro_model_dir, "arithmetic-v0", _config(tmp_path, dynamic_sampling=True,
                                                                   max_resample_rounds=3),
                          verifiers=[_odd_length])
    trainer._prepare()
    data = trainer.next_step_data()
    groups = data.batch.group_ids.unique()
    assert len(groups) <= 2 and len(data.batch) == 4 * len(groups)
    if len(groups):  # every kept group has a reward spread
        assert informative_groups(data.batch.rewards, data.batch.group_ids, ~data.batch.failed).all()
    assert data.metrics["dynamic/kept_groups"] == len(groups)


@pytest.mark.slow
def test_resume_continues_exactly(micro_model_dir, tmp_path):
    """Stop after step 2, resume, and steps 3–4 have the uninterrupted run's losses."""
    kw = dict(num_iterations=2, beta=0.05, gradient_accumulation_steps=2, save_steps=2)
    full = GRPOTrainer(micro_model_dir, "arithmetic-v0", _config(tmp_path / "full", max_steps=4, **kw),
                       verifiers=[_odd_length])
    full.train()
    GRPOTrainer(micro_model_dir, "arithmetic-v0", _config(tmp_path / "cut", max_steps=2, **kw),
                verifiers=[_odd_length]).train()
    resumed = GRPOTrainer(micro_model_dir, "arithmetic-v0",
                          _config(tmp_path / "cut", max_steps=4, resume_from_checkpoint="latest", **kw),
                          verifiers=[_odd_length])
    resumed.train()

    def losses(d):
        return {m["step"]: m["loss"] for m in read_metrics(d / "metrics.jsonl") if "loss" in m}

    a, b = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert set(a) == set(b) == {1, 2, 3, 4}
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], abs=1e-6), f"step {step}"
    assert a[3] != 0.0


# -- learning ------------------------------------------------------------------------------------------
#: the pass-rate gain (absolute, on 128 held-out tasks) the learning test requires
GRPO_MARGIN = 0.10


@pytest.mark.slow
def test_grpo_raises_pass_rate_over_sft_start(sft_start, tmp_path):  # noqa: F811
    from tests.rl_helpers import EVAL, eval_pass_rates, make_env

    cfg = GRPOConfig(output_dir=str(tmp_path), max_steps=60, learning_rate=3e-5, num_prompts_per_step=8,
                     group_size=8, max_new_tokens=16, beta=0.0, report_to="none", progress_bar=False, seed=0,
                     **EVAL)
    result = GRPOTrainer(sft_start, make_env(), cfg).train()
    before, after = eval_pass_rates(result)
    print(f"GRPO pass rate {before:.3f} -> {after:.3f}")
    assert after >= before + GRPO_MARGIN, (before, after)

"""GRPOTrainer: reward shaping and masks, dynamic sampling, exact resume, and learning on
``arithmetic-v0`` from the pinned start (slow)."""

from __future__ import annotations

import torch
import pytest

from rlenv.batch import RolloutBatch
from trainers.config import GRPOConfig
from trainers.grpo import GRPOTrainer
from trainers.metrics_log import read_metrics
from tests.rl_helpers import one_thread, rl_start  # noqa: F401  (the pinned start fixture)
from trainers.online import (build_env, gather_rows, informative_groups, micro_batches_by_length,
                             overlong_penalty, shape_rewards)


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
def test_resume_continues_exactly(micro_model_dir, tmp_path, default_threads):
    """Stop after step 2, resume, and steps 3–4 have the uninterrupted run's losses and end with
    its weights, bit for bit, on torch's own thread count (at least 2)."""
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
        assert b[step] == a[step], f"step {step}"
    assert a[3] != 0.0
    end, got = full.unwrapped_model.state_dict(), resumed.unwrapped_model.state_dict()
    assert all(torch.equal(end[k], got[k]) for k in end)


@pytest.mark.slow
def test_same_seed_gives_the_same_weights_at_the_default_thread_count(rl_start, tmp_path, default_threads):
    """Two GRPO runs with one seed, on torch's own thread count (at least 2, so the intra-op
    threads really split the work), end with bit-identical weights. (The prompt cache shared by a
    group's samples once spread its gradient back with atomic adds across threads, and same-seed
    runs drifted apart by ~1e-6; see docs/training.md, "Same seed, same result".)"""
    from transformers import AutoModelForCausalLM

    from tests.rl_helpers import fused_adamw, make_env

    weights = []
    for run in ("a", "b"):
        cfg = GRPOConfig(output_dir=str(tmp_path / run), max_steps=2, learning_rate=1e-4, num_prompts_per_step=8,
                         group_size=8, max_new_tokens=16, beta=0.0, report_to="none", progress_bar=False,
                         eval_num_tasks=0, seed=0, fused_adamw=fused_adamw())
        trainer = GRPOTrainer(rl_start, make_env(), cfg)
        trainer.train()
        weights.append({k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()})
    a, b = weights
    start = AutoModelForCausalLM.from_pretrained(rl_start).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the runs trained
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, differ


# -- learning ------------------------------------------------------------------------------------------
#: what the learning test requires of the greedy pass rate (128 held-out tasks); see its docstring
GRPO_MIN_GAIN, GRPO_MIN_END = 0.10, 0.85


def learn(start: str, out, seed: int = 0, fused_adamw=None, trainer_class=GRPOTrainer, env=None,
          **overrides) -> dict:
    """The learning test's core: the GRPO recipe (:func:`tests.rl_helpers.grpo_config`) from the
    pinned start on two-digit addition; returns ``train()``'s result and the ``trainer``.
    (``trainer_class`` / ``env``: the faulty-verifier test and the spread script's random-reward
    control swap in their own.)"""
    from tests.rl_helpers import grpo_config, make_env

    with one_thread():
        trainer = trainer_class(start, env if env is not None else make_env(),
                                grpo_config(out, seed, fused_adamw, **overrides))
        return dict(trainer.train(), trainer=trainer)


@pytest.mark.slow
def test_grpo_raises_pass_rate_over_sft_start(rl_start, tmp_path):  # noqa: F811
    """GRPO raises the pinned start's greedy pass rate from the verifier's reward alone.

    Spread (tests/measure_learning_spread.py): SPREAD."""
    from tests.rl_helpers import check_start, eval_pass_rates, fused_adamw

    before, after = eval_pass_rates(learn(rl_start, tmp_path, seed=0, fused_adamw=fused_adamw()))
    print(f"GRPO pass rate {before:.3f} -> {after:.3f}")
    check_start(before)
    assert after - before >= GRPO_MIN_GAIN and after >= GRPO_MIN_END, (before, after)

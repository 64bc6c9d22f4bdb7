"""PPOTrainer: value head, GAE wiring, KL controller state, and learning on ``arithmetic-v0`` (slow)."""

from __future__ import annotations

import pytest
import torch

from tests.rl_helpers import one_thread, rl_start  # noqa: F401  (the pinned start fixture)
from trainers.config import PPOConfig
from trainers.ppo import PPOTrainer, ValueHead, policy_and_value


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=1, learning_rate=1e-3, num_prompts_per_step=2, group_size=2,
                max_new_tokens=6, report_to="none", progress_bar=False, eval_num_tasks=0)
    base.update(kw)
    return PPOConfig(**base)


def test_value_head_aligned_with_logprobs(micro_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    head = ValueHead(model.config.hidden_size)
    torch.nn.init.normal_(head.summary.weight)
    ids = torch.randint(0, 250, (2, 9))
    attn = torch.ones_like(ids)
    logp, values, ent = policy_and_value(model, head, ids, attn, start=4, with_entropy=True)
    assert logp.shape == values.shape == ent.shape == (2, 5)
    # V at completion token t is read from the hidden state that predicts it (position t-1)
    h = model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(values, head(h[:, 3:8]))


def test_value_learning_rate_is_the_value_heads_own(micro_model_dir, tmp_path):
    """``value_learning_rate`` puts the value head in its own optimizer groups at that rate (and the
    schedule scales both rates alike); without it the head trains at the policy's rate."""
    trainer = PPOTrainer(micro_model_dir, "arithmetic-v0",
                         _config(tmp_path, learning_rate=1e-5, value_learning_rate=3e-3, lr_scheduler="linear"),
                         verifiers=[_always])
    trainer._prepare()
    head = {id(p) for p in trainer.extra_modules["value_head"].parameters()}
    rates = {}
    for g in trainer.optimizer.param_groups:
        kinds = {id(p) in head for p in g["params"]}
        assert len(kinds) == 1  # a group holds head or policy parameters, never both
        rates.setdefault(kinds.pop(), set()).add(g["initial_lr"])
    assert rates == {True: {3e-3}, False: {1e-5}}
    plain = PPOTrainer(micro_model_dir, "arithmetic-v0", _config(tmp_path / "b", learning_rate=1e-5),
                       verifiers=[_always])
    plain._prepare()
    assert {g["initial_lr"] for g in plain.optimizer.param_groups} == {1e-5}


def _always(completion, task):
    return 1.0


@pytest.mark.slow
def test_ppo_step_trains_value_head_and_keeps_kl_state(micro_model_dir, tmp_path):
    # every completion earns 1 while V starts at 0: the returns are 1, so the value head must move
    trainer = PPOTrainer(micro_model_dir, "arithmetic-v0",
                         _config(tmp_path, adaptive_kl=True, kl_target=0.01, kl_horizon=10, ppo_epochs=2,
                                 gradient_accumulation_steps=2),
                         verifiers=[_always])
    before = trainer.extra_modules["value_head"].summary.weight.detach().clone()
    out = trainer.train()
    after = trainer.extra_modules["value_head"].summary.weight.detach()
    assert not torch.equal(before, after)  # the value loss reaches the head
    m = out["metrics"]
    assert {"value_loss", "vf_clip_frac", "kl", "kl_coef", "return_mean"} <= set(m)
    assert trainer.data_state()["kl_ctl"]["value"] == trainer.kl_ctl.value
    assert trainer.kl_ctl.value != 0.05  # the adaptive controller moved β


#: what the learning test requires of the greedy pass rate (128 held-out tasks); see its docstring
PPO_MIN_GAIN, PPO_MIN_END = 0.10, 0.85


def learn(start: str, out, seed: int = 0, fused_adamw=None, **overrides) -> dict:
    """The learning test's core: 30 PPO steps (16 prompts x 4 samples, 2 epochs, lr 3e-5, KL 0.01 in
    the reward) from the pinned start on two-digit addition; returns ``train()``'s result."""
    from tests.rl_helpers import EVAL, make_env

    kw = dict(output_dir=str(out), max_steps=30, learning_rate=3e-5, num_prompts_per_step=16, group_size=4,
              max_new_tokens=16, ppo_epochs=2, kl_coef=0.01, vf_coef=0.1, report_to="none", progress_bar=False,
              seed=seed, fused_adamw=fused_adamw, **EVAL)
    with one_thread():
        return PPOTrainer(start, make_env(), PPOConfig(**dict(kw, **overrides))).train()


@pytest.mark.slow
def test_ppo_raises_pass_rate_over_sft_start(rl_start, tmp_path):  # noqa: F811
    """PPO raises the pinned start's greedy pass rate from the verifier's reward alone.

    Spread (tests/measure_learning_spread.py): SPREAD."""
    from tests.rl_helpers import check_start, eval_pass_rates, fused_adamw

    before, after = eval_pass_rates(learn(rl_start, tmp_path, seed=0, fused_adamw=fused_adamw()))
    print(f"PPO pass rate {before:.3f} -> {after:.3f}")
    check_start(before)
    assert after - before >= PPO_MIN_GAIN and after >= PPO_MIN_END, (before, after)

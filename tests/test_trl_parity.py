"""Parity with TRL 1.16.0's GRPO: the same tiny model, batch and settings give the same loss and the
same gradients (float32, CPU, 1e-5) for each aggregation, and the same group advantages.

TRL is called through its own code path (``GRPOTrainer._compute_loss`` and
``_generate_and_score_completions``); nothing of TRL is re-implemented here.
"""

from __future__ import annotations

import copy

import pytest
import torch

trl = pytest.importorskip("trl")
pytestmark = pytest.mark.skipif(trl.__version__ != "1.16.0", reason="parity pinned to trl 1.16.0")

from trainers.advantages import grpo_advantages  # noqa: E402
from trainers.losses import aggregate, get_policy_loss, kl_loss_term  # noqa: E402
from trainers.online import completion_logprobs  # noqa: E402

B, P, C = 4, 5, 7  # rows, prompt length, completion length


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    seen = []

    def reward(completions, **kw):  # deterministic, varied rewards; records what TRL saw
        r = [float(len(c) % 3) + 0.5 * (len(c) % 2) for c in completions]
        seen.append(r)
        return r

    def make(loss_type, **kw):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        args = trl.GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=B,
                              num_generations=B, max_completion_length=C, loss_type=loss_type,
                              report_to=[], use_cpu=True, bf16=False, seed=0, **kw)
        ds = Dataset.from_dict({"prompt": ["What is 1+1?"] * B})
        trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                                  processing_class=tok)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # what Trainer's train loop sets (no accumulation)
        return trainer

    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(0, 256, (B, P), generator=g)
    completion_ids = torch.randint(0, 256, (B, C), generator=g)
    lengths = torch.tensor([7, 3, 5, 1])
    completion_mask = (torch.arange(C)[None] < lengths[:, None]).long()
    advantages = torch.tensor([1.2, -0.4, 0.7, -1.5])
    return dict(make=make, seen=seen, tok=tok, tiny=tiny_model_dir, prompt_ids=prompt_ids,
                completion_ids=completion_ids, completion_mask=completion_mask, advantages=advantages)


def _trl_loss_and_grads(trainer, s, old=None, ref=None):
    inputs = {"prompt_ids": s["prompt_ids"], "prompt_mask": torch.ones_like(s["prompt_ids"]),
              "completion_ids": s["completion_ids"], "completion_mask": s["completion_mask"],
              "advantages": s["advantages"], "num_items_in_batch": s["completion_mask"].sum().float()}
    if old is not None:
        inputs["old_per_token_logps"] = old
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    model = trainer.model
    model.zero_grad()
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _our_loss_and_grads(s, agg, policy_loss="clip", old=None, ref=None, beta=0.0, eps=(0.2, 0.2),
                        kl_corrected=True):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(s["tiny"], dtype=torch.float32)
    model.train()
    input_ids = torch.cat([s["prompt_ids"], s["completion_ids"]], 1)
    attn = torch.cat([torch.ones_like(s["prompt_ids"]), s["completion_mask"]], 1)
    mask = s["completion_mask"].float()
    logp, _ = completion_logprobs(model, input_ids, attn, start=P)
    old = logp.detach() if old is None else old  # μ = 1: no second forward
    per_token, _ = get_policy_loss(policy_loss)(logp, old, s["advantages"], mask, epsilon_low=eps[0], epsilon_high=eps[1])
    if beta:
        per_token = per_token + beta * kl_loss_term(logp, ref, old if kl_corrected else None, "k3")
    loss = aggregate(per_token, mask, agg, max_length=C)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(ours, theirs):
    (l1, g1), (l2, g2) = ours, theirs
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-5, rtol=1e-4, msg=f"gradient of {n}")
    assert any(g.abs().sum() > 0 for g in g1.values())  # a real gradient, not all zeros


@pytest.mark.parametrize("trl_loss_type,agg", [("grpo", "seq-mean"), ("bnpo", "token-mean"),
                                               ("dapo", "token-mean"), ("dr_grpo", "constant")])
def test_grpo_loss_and_grads_match_trl_on_policy(setup, trl_loss_type, agg):
    trainer = setup["make"](trl_loss_type, beta=0.0, epsilon=0.2)
    _assert_same(_our_loss_and_grads(setup, agg), _trl_loss_and_grads(trainer, setup))


def _off_policy_logps(s, scale):
    """Old/ref log-probs that differ from the current ones enough to hit the clip range."""
    g = torch.Generator().manual_seed(1)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(s["tiny"], dtype=torch.float32)
    input_ids = torch.cat([s["prompt_ids"], s["completion_ids"]], 1)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, input_ids, torch.ones_like(input_ids), start=P)
    return logp + scale * torch.randn(logp.shape, generator=g)


@pytest.mark.parametrize("trl_loss_type,agg,corrected", [("grpo", "seq-mean", True), ("dapo", "token-mean", True),
                                                         ("dr_grpo", "constant", True), ("grpo", "seq-mean", False)])
def test_clip_higher_and_kl_match_trl_off_policy(setup, trl_loss_type, agg, corrected):
    """μ > 1 (old log-probs from an earlier policy) with clip-higher ε and a k3 KL term, β = 0.04,
    with and without the ratio-weighted (bias-corrected) KL."""
    old, ref = _off_policy_logps(setup, 0.3), _off_policy_logps(setup, 0.1)
    trainer = setup["make"](trl_loss_type, beta=0.04, epsilon=0.2, epsilon_high=0.28,
                            use_bias_correction_kl=corrected)
    ours = _our_loss_and_grads(setup, agg, old=old, ref=ref, beta=0.04, eps=(0.2, 0.28), kl_corrected=corrected)
    _assert_same(ours, _trl_loss_and_grads(trainer, setup, old=old, ref=ref))


def test_gspo_matches_trl_sequence_level(setup):
    old = _off_policy_logps(setup, 0.05)
    trainer = setup["make"]("grpo", beta=0.0, epsilon=3e-3, epsilon_high=4e-3,
                            importance_sampling_level="sequence")
    ours = _our_loss_and_grads(setup, "seq-mean", policy_loss="gspo", old=old, eps=(3e-3, 4e-3))
    _assert_same(ours, _trl_loss_and_grads(trainer, setup, old=old))


def test_cispo_matches_trl(setup):
    """TRL's ``epsilon_high`` for CISPO is the cap itself; ours is ``1 + eps_high``."""
    old = _off_policy_logps(setup, 0.5)
    trainer = setup["make"]("cispo", beta=0.0, epsilon_high=1.5)
    ours = _our_loss_and_grads(setup, "token-mean", policy_loss="cispo", old=old, eps=(None, 0.5))
    _assert_same(ours, _trl_loss_and_grads(trainer, setup, old=old))


def test_group_advantages_match_trl(setup):
    """TRL generates, scores with our recorded reward function and normalises per group."""
    trainer = setup["make"]("grpo", beta=0.0)
    setup["seen"].clear()
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions([{"prompt": "What is 1+1?"}] * B)
    rewards = torch.tensor(setup["seen"][-1])
    ours = grpo_advantages(rewards, torch.zeros(B, dtype=torch.long))
    torch.testing.assert_close(ours, out["advantages"].float(), atol=1e-5, rtol=1e-5)

"""DPO: loss and gradient parity with TRL 1.16.0 (sigmoid, IPO, hinge), the loss functions against
hand-computed values, precomputed reference log-probs, and a learning test on arithmetic-v0."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from trainers.config import DPOConfig
from trainers.dpo import DPOTrainer
from trainers.losses_pref import dpo_loss
from trainers.modeling import Reference
from tests.sft_helpers import arithmetic_sft  # noqa: F401  (shared SFT start fixture)

trl = pytest.importorskip("trl")
assert trl.__version__ == "1.16.0", "parity is pinned to TRL 1.16.0"

PAIRS = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
          "chosen": [{"role": "assistant", "content": f"<a>{a + b}</a>"}],
          "rejected": [{"role": "assistant", "content": f"<a>{a + b + 1}</a> or so"}]}
         for a, b in [(1, 2), (3, 4), (10, 20), (5, 6)]]


def _perturbed(model, seed=1, scale=0.02):
    """A copy with noise added, so policy ≠ reference and the log-ratios are not all zero."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return out


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "sigmoid+sft"])
def test_parity_with_trl(micro_model_dir, tmp_path, loss_type):
    """Same model, batch and settings: same loss and gradients as TRL. ``sigmoid+sft`` is our
    ``sft_weight`` (RPO) against TRL's ``loss_type=["sigmoid", "sft"]`` with ``loss_weights``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    base = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    policy = _perturbed(base)
    ref_trl, ref_ours = copy.deepcopy(base), copy.deepcopy(base)
    beta = 0.5
    sft_weight = 0.7 if loss_type == "sigmoid+sft" else 0.0
    loss_type, trl_types, trl_weights = loss_type.split("+")[0], loss_type.split("+"), [1.0, sft_weight][:1 + bool(sft_weight)]
    theirs = trl.DPOTrainer(model=copy.deepcopy(policy), ref_model=ref_trl,
                            args=trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=trl_types,
                                               loss_weights=trl_weights, report_to="none", use_cpu=True, bf16=False),
                            train_dataset=Dataset.from_list(PAIRS), processing_class=tok)
    batch = theirs.data_collator([theirs.train_dataset[i] for i in range(len(PAIRS))])
    theirs.model.train()
    loss_trl = theirs.compute_loss(theirs.model, dict(batch))
    loss_trl.backward()

    ours = DPOTrainer(copy.deepcopy(policy), DPOConfig(output_dir=str(tmp_path / "ours"), beta=beta,
                                                       loss_type=loss_type, sft_weight=sft_weight, report_to="none"),
                      tokenizer=tok, train_dataset=PAIRS)
    ours.ref = Reference(ours.model, frozen=ref_ours)
    # our tokenisation of the pairs is TRL's, token for token
    mine = ours.collate(ours.train_rows)
    for k in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(mine[k], batch[k].to(mine[k].dtype)), k
    ours.model.train()
    loss_ours, metrics = ours.compute_loss(ours.model, dict(batch))
    loss_ours.backward()

    assert abs(loss_ours.item() - loss_trl.item()) < 1e-5
    assert metrics["rewards/margin"] != 0  # the test is not the trivial policy == reference point
    named_trl = dict(theirs.model.named_parameters())
    for name, p in ours.model.named_parameters():
        q = named_trl[name]
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_dpo_loss_by_hand():
    c, r = torch.tensor([-3.0]), torch.tensor([-5.0])
    rc, rr = torch.tensor([-4.0]), torch.tensor([-4.5])
    d = (-3 + 4) - (-5 + 4.5)  # 1.5
    beta = 0.2
    sig = -math.log(1 / (1 + math.exp(-beta * d)))
    assert dpo_loss(c, r, rc, rr, beta=beta)[0].item() == pytest.approx(sig, abs=1e-6)
    assert dpo_loss(c, r, rc, rr, beta=beta, loss_type="hinge")[0].item() == pytest.approx(1 - beta * d, abs=1e-6)
    ipo = ((1.0 / 2 - (-0.5) / 4) - 1 / (2 * beta)) ** 2
    got = dpo_loss(c, r, rc, rr, beta=beta, loss_type="ipo", chosen_lengths=torch.tensor([2.0]),
                   rejected_lengths=torch.tensor([4.0]))[0]
    assert got.item() == pytest.approx(ipo, abs=1e-5)
    eps = 0.1
    ls = lambda x: math.log(1 / (1 + math.exp(-x)))  # noqa: E731
    robust = (-(1 - eps) * ls(beta * d) + eps * ls(-beta * d)) / (1 - 2 * eps)
    assert dpo_loss(c, r, rc, rr, beta=beta, loss_type="robust", label_smoothing=eps)[0].item() == \
        pytest.approx(robust, abs=1e-6)
    cdpo = -(1 - eps) * ls(beta * d) - eps * ls(-beta * d)
    assert dpo_loss(c, r, rc, rr, beta=beta, label_smoothing=eps)[0].item() == pytest.approx(cdpo, abs=1e-6)
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(c, r, rc, rr, loss_type="ipo")


def test_precomputed_reference_matches_live(micro_model_dir, tmp_path):
    live = DPOTrainer(micro_model_dir, DPOConfig(output_dir=str(tmp_path / "a"), report_to="none"),
                      train_dataset=PAIRS)
    pre = DPOTrainer(micro_model_dir, DPOConfig(output_dir=str(tmp_path / "b"), report_to="none",
                                                precompute_ref_logprobs=True), train_dataset=PAIRS)
    assert pre.ref is None and all(r.ref_chosen is not None for r in pre.train_rows)
    batch_live, batch_pre = live.collate(live.train_rows), pre.collate(pre.train_rows)
    assert "ref_chosen_logps" in batch_pre and "ref_chosen_logps" not in batch_live
    a, _ = live.compute_loss(live.model, batch_live)
    b, _ = pre.compute_loss(pre.model, batch_pre)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    # reference log-probs given in the data: no reference model at all
    rows = [dict(p, ref_chosen_logps=-1.0, ref_rejected_logps=-2.0) for p in PAIRS]
    given = DPOTrainer(micro_model_dir, DPOConfig(output_dir=str(tmp_path / "c"), report_to="none"),
                       train_dataset=rows)
    assert given.ref is None


def test_bad_rows_are_named(micro_model_dir, tmp_path):
    with pytest.raises(ValueError, match="lacks \\['rejected'\\]"):
        DPOTrainer(micro_model_dir, DPOConfig(output_dir=str(tmp_path)), train_dataset=[{"prompt": "x", "chosen": "y"}])


@pytest.mark.slow
def test_dpo_raises_pass_rate_over_sft_start(arithmetic_sft, tmp_path):
    """From the shared SFT start (one-digit addition), pairs of the model's own samples judged by the
    verifier (correct vs incorrect; the task's target stands in when no sample was correct), then DPO
    in its RPO form (sigmoid, β = 0.03, plus the NLL of the chosen answer), 3 epochs: the greedy pass
    rate on 100 eval tasks rises by at least 10 points (measured on a 2-core CPU, OMP_NUM_THREADS=1:
    46 % → 73 %). The curve of this tiny model is noisy (every 16 steps: 46, 43, 51, 73, 57 %), so
    the margin is asserted at the end of epoch 3 only.

    Plain sigmoid DPO without the NLL term lowered the pass rate of this 0.8 M-parameter model in
    every setting tried (64 % → 52-63 %): pushing down a wrong digit in one problem pushes it down
    in the others too. (tests/test_dpo.py::test_parity_with_trl checks the loss itself.)"""
    from tests.sft_helpers import EVAL, make_env
    from trainers.pairs import verifier_pairs

    env = make_env()
    start = arithmetic_sft["model_dir"]
    pairs = verifier_pairs(start, env, num_prompts=256, samples_per_prompt=8, max_new_tokens=10, seed=1,
                           fallback_to_target=True)
    assert len(pairs) >= 100
    cfg = DPOConfig(output_dir=str(tmp_path), learning_rate=5e-4, beta=0.03, sft_weight=1.0, num_epochs=3,
                    per_device_train_batch_size=16, **EVAL)
    out = DPOTrainer(start, cfg, train_dataset=pairs, env=env).train()
    before, after = out["eval_history"][0]["eval/pass_rate"], out["eval_history"][-1]["eval/pass_rate"]
    assert before == pytest.approx(arithmetic_sft["eval_history"][-1]["eval/pass_rate"])
    assert after >= before + 0.10, (before, after)

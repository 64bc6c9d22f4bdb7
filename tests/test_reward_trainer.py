"""Reward-model training: Bradley–Terry parity with TRL 1.16.0 (loss and gradients, with margin and
centring), a learning test (≥ 90 % pairwise accuracy on held-apart pairs), and the exported
checkpoint loading as a plain sequence-classification model."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from trainers.config import RewardConfig
from trainers.losses_pref import bradley_terry_loss
from trainers.reward import RewardTrainer

trl = pytest.importorskip("trl")
assert trl.__version__ == "1.16.0", "parity is pinned to TRL 1.16.0"


def test_bradley_terry_by_hand():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    assert bradley_terry_loss(c, r).item() == pytest.approx(want, abs=1e-6)
    m = torch.tensor([0.5, 0.0])
    want_m = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2
    assert bradley_terry_loss(c, r, m).item() == pytest.approx(want_m, abs=1e-6)
    assert bradley_terry_loss(c, r, center_rewards_coefficient=0.1).item() == pytest.approx(want + 0.1 * (9 + 1) / 2)


@pytest.mark.parametrize("with_margin", [False, True])
def test_parity_with_trl(micro_model_dir, tmp_path, with_margin):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(micro_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
             "chosen": [{"role": "assistant", "content": f"<a>{a + b}</a>"}],
             "rejected": [{"role": "assistant", "content": f"{a + b + 3} maybe"}]} for a, b in [(1, 2), (30, 4), (7, 8)]]
    if with_margin:
        rows = [dict(r, margin=float(i) / 2) for i, r in enumerate(rows)]
    coef = 0.01
    theirs = trl.RewardTrainer(model=copy.deepcopy(model),
                               args=trl.RewardConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True,
                                                     bf16=False, center_rewards_coefficient=coef),
                               train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = theirs.data_collator([theirs.train_dataset[i] for i in range(len(rows))])
    assert ("margin" in batch) == with_margin
    theirs.model.train()
    loss_trl = theirs.compute_loss(theirs.model, dict(batch))
    loss_trl.backward()

    ours = RewardTrainer(copy.deepcopy(model), RewardConfig(output_dir=str(tmp_path / "ours"), report_to="none",
                                                            center_rewards_coefficient=coef),
                         tokenizer=tok, train_dataset=rows)
    ours.model.train()
    loss_ours, _ = ours.compute_loss(ours.model, dict(batch))
    loss_ours.backward()
    assert abs(loss_ours.item() - loss_trl.item()) < 1e-5
    named = dict(theirs.model.named_parameters())
    for name, p in ours.model.named_parameters():
        torch.testing.assert_close(p.grad, named[name].grad, rtol=1e-5, atol=1e-5, msg=name)


def format_pairs(n: int, seed: int) -> list[dict]:
    """Arithmetic prompts; chosen: the well-formed tagged answer, rejected: a malformed one."""
    rng = random.Random(seed)
    bad = [lambda s: s, lambda s: f"<a>{s}", lambda s: f"answer: {s}", lambda s: f"{s}</a>", lambda s: f"<b>{s}</b>"]
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        s = str(a + b)
        rows.append({"prompt": f"What is {a} + {b}?", "chosen": f"<a>{s}</a>", "rejected": rng.choice(bad)(s)})
    return rows


@pytest.mark.slow
def test_reward_model_learns_held_apart_pairs(tiny_model_dir, tmp_path):
    train, held = format_pairs(256, seed=0), format_pairs(100, seed=1)
    cfg = RewardConfig(output_dir=str(tmp_path), learning_rate=1e-3, num_epochs=2, per_device_train_batch_size=16,
                       lr_scheduler="constant", progress_bar=False, report_to="none", seed=0)
    trainer = RewardTrainer(tiny_model_dir, cfg, train_dataset=train, eval_dataset=held)
    before = trainer.pairwise_accuracy(trainer.eval_rows)
    out = trainer.train()
    after = out["eval_history"][-1]["eval/accuracy"]
    assert after >= 0.9, (before, after)
    # the export is a plain sequence-classification checkpoint
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(out["model_dir"])
    assert rm.config.num_labels == 1

"""SFT: completion-only masks (pairs and conversations), tokens identical to what the engine sees at
generation time, packing, env-sourced data, and a learning test on arithmetic-v0."""

from __future__ import annotations

import pytest
import torch

from trainers.config import SFTConfig
from trainers.formatting import encode_messages, encode_pair
from trainers.losses_pref import sft_loss
from trainers.sft import SFTTrainer, pack_rows
from tests.sft_helpers import arithmetic_sft  # noqa: F401  (shared SFT start fixture)


@pytest.fixture(scope="module")
def tok(micro_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_model_dir)


def test_pair_mask_covers_the_completion_only(tok):
    from rlenv.engines.hf import encode_prompt

    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    ids, mask = encode_pair(tok, prompt, "<a>5</a>")
    n_prompt = mask.index(1)
    # the prompt ids are exactly the ids the generation engine feeds the model
    assert ids[:n_prompt] == encode_prompt(tok, prompt)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained.startswith("<a>5</a><|im_end|>")  # the answer and the end-of-turn token
    assert all(m == 1 for m in mask[n_prompt:])
    # a string prompt is one user message; truncation keeps the start
    ids2, mask2 = encode_pair(tok, "What is 2 + 3?", "<a>5</a>", max_length=10)
    assert len(ids2) == len(mask2) == 10


def test_conversation_masks_every_assistant_turn(tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "B2"}]
    ids, mask = encode_messages(tok, msgs)
    assert tok.decode(ids) == tok.apply_chat_template(msgs, tokenize=False)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert "A1" in trained and "B2" in trained and "hi" not in trained and "again" not in trained
    with pytest.raises(ValueError, match="no assistant turn"):
        encode_messages(tok, [{"role": "user", "content": "hi"}])


def test_packing_keeps_masks_and_limit():
    rows = [([1, 2, 3], [0, 1, 1]), ([4, 5], [0, 1]), ([6, 7, 8, 9], [0, 0, 1, 1])]
    packed = pack_rows(rows, max_length=5)
    assert packed == [([1, 2, 3, 4, 5], [0, 1, 1, 0, 1]), ([6, 7, 8, 9], [0, 0, 1, 1])]


def test_sft_loss_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    assert sft_loss(logps, mask).item() == pytest.approx((2 + 3 + 6) / 3)


def test_env_rows_and_dataset_forms(micro_model_dir, tmp_path):
    import datasets

    import rlenv

    env = rlenv.make("arithmetic-v0")
    cfg = SFTConfig(output_dir=str(tmp_path), report_to="none", progress_bar=False)
    t = SFTTrainer(micro_model_dir, cfg, env=env, num_env_examples=5)
    assert len(t.train_rows) == 5
    text = t.tokenizer.decode([i for i, m in zip(t.train_rows[0].ids, t.train_rows[0].mask) if m])
    assert text.startswith("<a>") and "</a>" in text
    ds = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "a"}]}] * 3)
    assert len(SFTTrainer(micro_model_dir, cfg, train_dataset=ds).train_rows) == 3
    with pytest.raises(ValueError, match="'messages' column or 'prompt' and 'completion'"):
        SFTTrainer(micro_model_dir, cfg, train_dataset=[{"text": "x"}])
    no_target = rlenv.SingleTurnEnv([rlenv.Task("2+2?", "4")], [lambda c, t: 0.0])
    with pytest.raises(ValueError, match=r"info\['target'\]"):
        SFTTrainer(micro_model_dir, cfg, env=no_target, num_env_examples=2)


@pytest.mark.slow
def test_sft_learns_the_answer_format(arithmetic_sft):
    """The shared SFT start (150 steps of one-digit addition from random weights): the loss falls
    and the model answers in the task's format (``<a>N</a>``) where it never did before."""
    losses = arithmetic_sft["losses"]
    before, after = arithmetic_sft["eval_history"][0], arithmetic_sft["eval_history"][-1]
    assert sum(losses[-10:]) / 10 < 0.3 * losses[0]
    assert before["eval/format"] == 0.0 and before["eval/pass_rate"] == 0.0
    assert after["eval/format"] >= 0.9, after
    assert after["eval/pass_rate"] >= 0.2, after

"""RewardModelVerifier on a real (tiny, random) Qwen2ForSequenceClassification checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlenv
from rlenv.core import Task
from verifiers import Rubric
from verifiers.reward_model import RewardModelVerifier, RunningMoments


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_model_dir):
    """The tiny preset's config with a one-label classification head, saved and reloaded the HF way."""
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels = 1
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(cfg)
    out = tmp_path_factory.mktemp("rm") / "tiny-rm"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


TASKS = [Task("What is 2+2?", "4"), Task([{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Name a colour."}], "red")]
COMPLETIONS = ["4", "It is four, I think, after some careful thought.", "red", "blue", "x" * 60, "", "22"]


def _tasks():
    return [TASKS[i % 2] for i in range(len(COMPLETIONS))]


def _direct_scores(rm_dir, texts):
    """One unpadded forward per text: the reference the batched path must reproduce."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt", add_special_tokens=False)
            out.append(model(**ids).logits[0, 0].item())
    return out


def test_batched_scores_match_unbatched_forward_with_chat_template(rm_dir):
    rm = RewardModelVerifier(rm_dir, batch_size=3, device="cpu")
    assert rm.use_chat_template
    tasks = _tasks()
    texts = [rm.render(t.prompt, c) for c, t in zip(COMPLETIONS, tasks)]
    msgs = TASKS[1].prompt + [{"role": "assistant", "content": "blue"}]
    assert texts[3] == rm.tokenizer.apply_chat_template(msgs, tokenize=False)
    assert texts[0].startswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4")
    results = rm.score_batch(COMPLETIONS, tasks)
    want = _direct_scores(rm_dir, texts)
    assert [r.reward for r in results] == pytest.approx(want, abs=1e-4)
    assert [r.details["raw_score"] for r in results] == pytest.approx(want, abs=1e-4)
    assert len(set(round(w, 5) for w in want)) > 3  # a real model gives different scores


def test_plain_concatenation_without_chat_template(rm_dir):
    rm = RewardModelVerifier(rm_dir, use_chat_template=False, device="cpu")
    assert rm.render("Q: 1+1? A: ", "2") == "Q: 1+1? A: 2"
    got = rm.score_pairs(["Q: 1+1? A: ", "Q: 3? "], ["2", "three"])
    assert got == pytest.approx(_direct_scores(rm_dir, ["Q: 1+1? A: 2", "Q: 3? three"]), abs=1e-4)


def test_fixed_and_running_normalisation(rm_dir):
    plain = RewardModelVerifier(rm_dir, device="cpu")
    prompts = [t.prompt for t in _tasks()]
    raw = plain.score_pairs(prompts, COMPLETIONS)
    fixed = RewardModelVerifier(rm_dir, device="cpu", normalize=(0.5, 2.0))
    assert fixed.score_pairs(prompts, COMPLETIONS) == pytest.approx([(r - 0.5) / 2.0 for r in raw], abs=1e-4)
    running = RewardModelVerifier(rm_dir, device="cpu", normalize="running")
    first = running.score_pairs(prompts, COMPLETIONS)
    assert np.mean(first) == pytest.approx(0.0, abs=1e-4) and np.std(first) == pytest.approx(1.0, abs=1e-3)
    # the next batch is normalised with statistics over everything seen so far
    raw2 = plain.score_pairs([TASKS[0].prompt] * 2, ["4", "5"])
    second = running.score_pairs([TASKS[0].prompt] * 2, ["4", "5"])
    seen = np.array(raw + raw2)
    assert running.moments.count == len(seen)
    assert second == pytest.approx(list((np.array(raw2) - seen.mean()) / seen.std()), abs=1e-4)


def test_running_moments_match_numpy():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(3, 2, 50), rng.normal(-1, 5, 7), rng.normal(0, 1, 1)
    m = RunningMoments()
    for batch in (a, b, c):
        m.update(list(batch))
    allv = np.concatenate([a, b, c])
    assert m.count == 58 and m.mean == pytest.approx(allv.mean()) and m.std == pytest.approx(allv.std())


def test_as_env_verifier_and_ppo_reward(rm_dir):
    rm = RewardModelVerifier(rm_dir, device="cpu")
    env = rlenv.SingleTurnEnv([TASKS[0]], Rubric([rm]))
    env.reset(seed=0)
    _, reward, _, _, info = env.step("4")
    direct = rm.score_pairs([TASKS[0].prompt], ["4"])[0]
    assert reward == pytest.approx(direct, abs=1e-5) and info["scores"]["reward_model"] == pytest.approx(direct, abs=1e-5)
    # one forward pass for the whole batch through a rubric (score_batch), same numbers as score_pairs
    res = Rubric([rm]).score_batch(COMPLETIONS, _tasks())
    assert [r.reward for r in res] == pytest.approx(rm.score_pairs([t.prompt for t in _tasks()], COMPLETIONS), abs=1e-5)


def test_loaded_model_object_and_clear_errors(rm_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    with pytest.raises(ValueError, match="pass tokenizer="):
        RewardModelVerifier(model)
    rm = RewardModelVerifier(model, AutoTokenizer.from_pretrained(rm_dir), device="cpu", batch_size=2)
    assert len(rm.score_pairs(["a", "b", "c"], ["1", "2", "3"])) == 3
    with pytest.raises(ValueError, match="normalize must be"):
        RewardModelVerifier(model, rm.tokenizer, normalize="zscore")
    with pytest.raises(ValueError, match="batch_size"):
        RewardModelVerifier(model, rm.tokenizer, batch_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_scores_match_cpu(rm_dir):
    cpu = RewardModelVerifier(rm_dir, device="cpu").score_pairs([t.prompt for t in _tasks()], COMPLETIONS)
    gpu = RewardModelVerifier(rm_dir, device="cuda").score_pairs([t.prompt for t in _tasks()], COMPLETIONS)
    assert gpu == pytest.approx(cpu, abs=1e-3)

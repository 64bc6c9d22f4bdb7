"""PPO's ``reward_model`` and online DPO's ``rank_by="reward_model"`` score through the env's rubric:
the reward model is a rubric component, so its score is in the rollout's reward (weighted), its
failures are masked like any verifier's, and the env's verifiers still decide ``correct``."""

from __future__ import annotations

import pytest
import torch

from tests.rl_helpers import one_thread
from trainers.config import OnlineDPOConfig, PPOConfig
from trainers.online_dpo import OnlineDPOTrainer
from trainers.ppo import PPOTrainer
from verifiers.reward_model import RewardModelVerifier


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, micro_model_dir):
    """The micro preset with a one-label classification head, saved and reloaded the HF way."""
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    cfg = AutoConfig.from_pretrained(micro_model_dir)
    cfg.num_labels = 1
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("rm") / "micro-rm"
    Qwen2ForSequenceClassification(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(micro_model_dir).save_pretrained(out)
    return str(out)


SMALL = dict(max_steps=1, num_prompts_per_step=3, max_new_tokens=6, report_to="none", progress_bar=False,
             eval_num_tasks=0)


def _rm_scores(rm_dir, batch) -> torch.Tensor:
    """The reward model applied directly (batched) to the rollout's (prompt, completion) pairs."""
    rm = RewardModelVerifier(rm_dir, device="cpu")
    return torch.tensor(rm.score_pairs([t.prompt for t in batch.tasks], batch.texts))


def test_ppo_adds_the_weighted_reward_model_to_the_rubric(micro_model_dir, rm_dir, tmp_path):
    cfg = PPOConfig(output_dir=str(tmp_path), group_size=2, reward_model=rm_dir, reward_model_weight=0.5, **SMALL)
    trainer = PPOTrainer(micro_model_dir, "arithmetic-v0", cfg)
    rubric = trainer.env.unwrapped.rubric
    weights = {c.name: c.weight for c in rubric.components}
    assert weights["reward_model"] == 0.5 and rubric.correct_component == "correct"
    batch = trainer.rollout(3)
    rm = _rm_scores(rm_dir, batch)
    assert torch.allclose(batch.reward_components["reward_model"], rm, atol=1e-4)
    others = sum(w * batch.reward_components[n] for n, w in weights.items() if n != "reward_model")
    assert torch.allclose(batch.rewards, others + 0.5 * rm, atol=1e-4)  # the verifiers' total plus the weighted RM
    assert torch.equal(batch.correct, batch.reward_components["correct"] >= 1.0)  # the task, not the RM, says correct
    metrics = trainer.make_step_data().metrics
    assert "reward_model_score" in metrics and "verifier/reward_model" in metrics


def test_online_dpo_ranks_by_the_reward_model_component(micro_model_dir, rm_dir, tmp_path):
    cfg = OnlineDPOConfig(output_dir=str(tmp_path), group_size=4, rank_by="reward_model", reward_model=rm_dir, **SMALL)
    trainer = OnlineDPOTrainer(micro_model_dir, "arithmetic-v0", cfg)
    batch = trainer.rollout(3)
    rm = _rm_scores(rm_dir, batch)
    # the reward is the RM's score alone; the env's verifiers are logged at weight 0 and still decide correct
    assert torch.allclose(batch.rewards, rm, atol=1e-4)
    assert {"correct", "format"} <= set(batch.reward_components)
    assert torch.equal(batch.correct, batch.reward_components["correct"] >= 1.0)
    assert trainer.train()["metrics"]["pairs"] >= 1  # random RM scores differ within a group: pairs form

import json

import pytest
import torch

import rlenv
from tasks import instructions


def _task(*specs):
    return rlenv.Task("Write.", answer=[{"name": n, "params": p} for n, p in specs])


@pytest.mark.parametrize("name,params,good,bad", [
    ("lowercase", {}, "all quiet here", "All quiet"),
    ("max_words", {"n": 3}, "one two three", "one two three four"),
    ("min_words", {"n": 2}, "one two", "one"),
    ("keyword", {"k": "green"}, "a Green leaf", "a greenish leaf"),
    ("no_commas", {}, "a b c", "a, b"),
    ("bullets", {"n": 2}, "- a\n- b", "- a\n- b\n- c"),
    ("end_phrase", {}, "Done. That is all.", "That is all. More."),
    ("json", {}, '{"note": "tea"}', "note: tea"),
])
def test_each_constraint_checker(name, params, good, bad):
    task = _task((name, params))
    assert instructions.check_all(good, task) == [True]
    assert instructions.check_all(bad, task) == [False]


def test_fraction_and_strict_modes():
    task = _task(("lowercase", {}), ("no_commas", {}))
    assert instructions.InstructionsVerifier("fraction").score("a, b", task).reward == 0.5
    assert instructions.InstructionsVerifier("all").score("a, b", task).reward == 0.0
    assert instructions.InstructionsVerifier("all").score("a b", task).reward == 1.0


def test_generated_prompts_never_hold_conflicting_constraints_and_difficulty_counts():
    import random

    rng = random.Random(0)
    for d in (1, 2, 3, 4):
        for _ in range(50):
            names = [c["name"] for c in instructions.generate(rng, d).answer]
            assert len(names) == d
            assert all(frozenset({a, b}) not in instructions.CONFLICTS for a in names for b in names if a != b)
    env = rlenv.make("instructions-v0", difficulty=2)
    rlenv.check_env(env)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from rlenv.models.tiny import create_tiny_model

    base = create_tiny_model(tmp_path_factory.mktemp("m") / "tiny", preset="micro")
    cfg = AutoConfig.from_pretrained(base)
    cfg.num_labels = 1
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_config(cfg)
    out = tmp_path_factory.mktemp("rm") / "rm"
    rm.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return str(out)


def test_preference_env_rewards_with_the_reward_model_and_logs_base_verifiers(reward_model_dir):
    env = rlenv.make("preference-v0", reward_model=reward_model_dir, base_env="arithmetic-v0")
    _, info = env.reset(seed=0)
    target = info["task"].info["target"]
    _, reward, terminated, _, step_info = env.step(target)
    assert terminated and set(step_info["scores"]) == {"reward_model", "correct", "format"}
    assert step_info["scores"]["correct"] == 1.0 and step_info["correct"] is True
    assert reward == pytest.approx(step_info["scores"]["reward_model"]) and reward != 0.0
    env.reset(seed=0)
    _, reward2, _, _, info2 = env.step("<a>-1</a>")
    assert info2["correct"] is False and reward2 != reward

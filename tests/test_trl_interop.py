"""Our envs out to TRL: ``env.as_dataset()`` and ``env.as_reward_function()`` (on top of
verifiers/trl_compat.py, whose rubric-level tests live in tests/test_trl_compat.py)."""

from __future__ import annotations

import math

import pytest

import rlenv
from rlenv.core import Task
from rlenv.env import SingleTurnEnv
from verifiers.rubric import Rubric


def trl_call(reward, ds, texts):
    """Call ``reward`` the way TRL's GRPOTrainer does: every non-prompt column as a per-sample list,
    conversational completions, plus TRL's runtime keyword arguments."""
    rows = list(ds)
    metrics = {}
    columns = {k: [r[k] for r in rows] for k in ds.column_names if k != "prompt"}
    return reward(prompts=[r["prompt"] for r in rows],
                  completions=[[{"role": "assistant", "content": t}] for t in texts],
                  completion_ids=[[1]] * len(rows), trainer_state=None,
                  log_metric=metrics.__setitem__, log_extra=lambda *a: None, **columns), metrics


def test_arithmetic_as_dataset_is_trl_conversational_with_task_columns():
    env = rlenv.make("arithmetic-v0", digits=1)
    ds = env.as_dataset(n=6)
    assert len(ds) == 6
    assert {"prompt", "answer", "task_id", "a", "b", "op", "difficulty", "target"} <= set(ds.column_names)
    obs, _ = env.reset(options={"task_index": 2})
    assert ds[2]["prompt"] == obs  # exactly what the env shows: system prompt + the question
    assert ds[2]["prompt"][0]["role"] == "system" and ds[2]["prompt"][-1]["role"] == "user"


def test_arithmetic_reward_function_scores_gold_and_wrong_like_the_env():
    env = rlenv.make("arithmetic-v0", digits=1)
    ds = env.as_dataset(n=4)
    reward = env.as_reward_function()
    assert reward.__name__ == "arithmetic_v0"
    gold = [r["target"] for r in ds]
    out, metrics = trl_call(reward, ds, gold)
    assert out == [1.0] * 4
    wrong = [f"<a>{int(a) + 1}</a>" for a in ds["answer"]]
    out, _ = trl_call(reward, ds, wrong)
    assert out == [0.0] * 4
    assert metrics["arithmetic_v0/correct"] == 1.0 and "arithmetic_v0/format" in metrics
    # the same numbers the env's own step() gives
    env.reset(options={"task_index": 0})
    assert env.step(wrong[0])[1] == 0.0


def test_math_env_reward_uses_our_math_verifier():
    env = rlenv.make("math-v0")
    ds = env.as_dataset()
    assert len(ds) == len(env.source)
    reward = env.as_reward_function(name="math")
    answers = list(ds["answer"])
    out, _ = trl_call(reward, ds, [f"so \\boxed{{{a}}}" for a in answers])
    assert out == [1.0] * len(answers)
    out, metrics = trl_call(reward, ds, ["no idea"] * len(answers))
    assert out == [0.0] * len(answers) and metrics["math/format"] == 0.0


def test_as_dataset_errors():
    endless = SingleTurnEnv(lambda rng: Task(f"{rng.randint(0, 9)}?", "0"), Rubric([lambda c, t: 1.0]))
    with pytest.raises(ValueError, match="endless; pass n="):
        endless.as_dataset()
    assert len(endless.as_dataset(n=3)) == 3
    with pytest.raises(ValueError, match="positive int"):
        endless.as_dataset(n=0)
    mixed = SingleTurnEnv([Task("a", info={"x": 1}), Task("b", info={"x": object()})], Rubric([lambda c, t: 1.0]))
    with pytest.raises(ValueError, match="task.info values plain data"):
        mixed.as_dataset()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["arithmetic-v0", "math-v0"])
def test_trl_grpo_trainer_trains_on_our_env(tmp_path, micro_model_dir, single_thread, env_id):
    """TRL's real GRPOTrainer, fed nothing but env.as_dataset() and env.as_reward_function()."""
    from trl import GRPOConfig, GRPOTrainer

    env = rlenv.make(env_id)
    reward = env.as_reward_function()
    cfg = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                     max_completion_length=8, max_steps=2, use_cpu=True, report_to="none", logging_steps=1,
                     save_strategy="no", bf16=False, learning_rate=1e-4, seed=0)
    trainer = GRPOTrainer(model=micro_model_dir, reward_funcs=reward, args=cfg, train_dataset=env.as_dataset(n=8))
    trainer.train()
    assert trainer.state.global_step == 2
    name = reward.__name__
    logs = [h for h in trainer.state.log_history if f"rewards/{name}/mean" in h]
    assert len(logs) == 2
    # our rubric's components reached TRL's logs through log_metric, and a random model scores 0
    assert all(f"{name}/correct" in h and h[f"rewards/{name}/mean"] == 0.0 for h in logs)
    assert all(math.isfinite(h["loss"]) for h in logs)

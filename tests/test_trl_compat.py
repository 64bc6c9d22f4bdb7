"""TRL interoperability: TRL reward functions as verifiers, and our rubrics as TRL reward functions."""

from __future__ import annotations

import asyncio
import inspect
import math

import pytest

from rlenv.core import Task
from verifiers import Component, Rubric
from verifiers.trl_compat import (TRLRewardVerifier, from_trl, is_trl_reward_function, row_to_task, task_to_row,
                                  to_trl_reward)

CHAT = [{"role": "system", "content": "Think, then box the answer."}, {"role": "user", "content": "1/3 as a fraction?"}]


def test_real_trl_reward_functions_work_unchanged():
    from trl.rewards import accuracy_reward, think_format_reward

    # the data set column TRL's accuracy_reward reads is `solution`: it comes from task.info
    tasks = [Task(CHAT, info={"solution": r"$\frac{1}{3}$"}), Task(CHAT, info={"solution": r"$\frac{1}{3}$"}),
             Task(CHAT, info={"solution": "no math here"})]
    completions = [r"<think>easy</think>The answer is $\boxed{\frac{1}{3}}$",
                   r"no thinking, $\boxed{\frac{1}{2}}$",
                   r"<think>x</think>$\boxed{1}$"]
    rubric = Rubric([think_format_reward, accuracy_reward])  # plain TRL functions, recognised as such
    assert all(isinstance(c.verifier, TRLRewardVerifier) for c in rubric.components)
    res = rubric.score_batch(completions, tasks)
    assert [r.components["think_format_reward"] for r in res] == [1.0, 0.0, 1.0]
    assert [r.components["accuracy_reward"] for r in res[:2]] == [1.0, 0.0]
    # accuracy_reward returns None for an unparseable gold: not applicable, masked from the sum
    assert res[2].verdicts["accuracy_reward"] == "n/a" and not res[2].failed
    assert [r.reward for r in res] == [2.0, 0.0, 1.0]
    extra = rubric.components[1].verifier.extra  # what it logged through log_extra
    assert extra["solution"] == [r"$\frac{1}{3}$"] * 2 + ["no math here"]


def test_columns_prompts_and_plain_format_are_passed_like_trl():
    seen = {}

    def reward_fn(prompts, completions, answer, level, **kwargs):
        seen.update(prompts=prompts, completions=completions, answer=answer, level=level, kwargs=sorted(kwargs))
        return [float(c == a) for c, a in zip(completions, answer)]

    tasks = [Task("2+2=", "4", info={"level": 1}), Task("3+3=", "6", info={"level": 2})]
    res = Rubric([from_trl(reward_fn)]).score_batch(["4", "7"], tasks)
    assert [r.reward for r in res] == [1.0, 0.0]
    assert seen["prompts"] == ["2+2=", "3+3="] and seen["completions"] == ["4", "7"]
    assert seen["answer"] == ["4", "6"] and seen["level"] == [1, 2]
    assert {"log_metric", "log_extra", "trainer_state"} <= set(seen["kwargs"])


def test_conversational_tasks_get_conversational_prompts_and_completions():
    seen = {}

    def reward_fn(prompts, completions, **kwargs):
        seen.update(prompts=prompts, completions=completions)
        return [1.0] * len(completions)

    Rubric([reward_fn]).score_batch(["hello"], [Task(CHAT)])
    assert seen["prompts"] == [CHAT]
    assert seen["completions"] == [[{"role": "assistant", "content": "hello"}]]


def test_function_without_var_kwargs_gets_only_what_it_names():
    def strict(completions, answer):
        return [float(c == a) for c, a in zip(completions, answer)]

    assert Rubric([strict]).score("9", Task("q", "9")).reward == 1.0


def test_async_none_logging_and_errors():
    async def async_len(completions, **kwargs):
        await asyncio.sleep(0)
        kwargs["log_metric"]("mean_len", sum(map(len, completions)) / len(completions))
        return [None if c == "skip" else float(len(c)) for c in completions]

    v = from_trl(async_len)
    res = Rubric([v]).score_batch(["ab", "skip", "abcd"], [Task("q")] * 3)
    assert [r.reward for r in res] == [2.0, 0.0, 4.0]
    assert res[1].verdicts["async_len"] == "n/a" and not res[1].failed
    assert v.metrics == {"mean_len": pytest.approx(10 / 3)}

    def wrong_length(completions, **kwargs):
        return [1.0]

    def raises(completions, **kwargs):
        raise RuntimeError("reward server down")

    res = Rubric([wrong_length, raises]).score_batch(["a", "b"], [Task("q")] * 2)
    assert all(r.failed for r in res)
    assert "returned 1 rewards for 2 completions" in res[0].details["wrong_length"]["error"]
    assert "reward server down" in res[0].details["raises"]["error"]


def test_detection_of_trl_shaped_functions():
    def ours(completion, task):
        return 1.0

    def theirs(completions, **kwargs):
        return [1.0 for _ in completions]

    assert is_trl_reward_function(theirs) and not is_trl_reward_function(ours)
    assert not is_trl_reward_function(Rubric) and not is_trl_reward_function(from_trl(theirs))
    assert from_trl(from_trl(theirs)).fn is theirs
    with pytest.raises(TypeError, match="expects a reward function"):
        from_trl(3)


def test_trl_calling_convention_in_the_installed_trl():
    """Guard against TRL changing how it calls reward functions (what to_trl_reward relies on)."""
    from trl import GRPOTrainer

    src = inspect.getsource(GRPOTrainer._calculate_rewards)
    assert "prompts=prompts, completions=completions, completion_ids=completion_ids_list, **reward_kwargs" in src
    assert 'reward_kwargs["log_metric"]' in src and "torch.nan" in src


def exact(completion, task):
    return float(completion.strip() == task.answer)


def crashes_on_level_2(completion, task):
    if task.info["level"] == 2:
        raise ValueError("level 2 grader broken")
    return 1.0


def test_rubric_as_trl_reward_function_called_as_trl_does():
    tasks = [Task(f"{i}+{i}=", str(2 * i), info={"level": i % 3}, id=f"t{i}") for i in range(3)]
    rows = [task_to_row(t) for t in tasks]
    assert rows[1] == {"prompt": [{"role": "user", "content": "1+1="}], "answer": "2", "task_id": "t1", "level": 1}
    reward = to_trl_reward(Rubric([exact, Component(crashes_on_level_2, 0.0)]), name="ours")
    assert reward.__name__ == "ours"
    # TRL repeats each row num_generations times and passes the columns as lists (here G=2)
    batch = [r for r in rows for _ in range(2)]
    metrics = {}
    out = reward(prompts=[r["prompt"] for r in batch],
                 completions=[[{"role": "assistant", "content": c}] for c in ["0", "x", "2", "2", "4", "9"]],
                 completion_ids=[[1, 2]] * 6,
                 answer=[r["answer"] for r in batch], task_id=[r["task_id"] for r in batch],
                 level=[r["level"] for r in batch], trainer_state=None, log_extra=lambda *a: None,
                 log_metric=lambda k, v: metrics.__setitem__(k, v))
    assert out == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]  # a weight-0 failure does not mask the sample
    assert metrics["ours/exact"] == pytest.approx(4 / 6)
    assert metrics["ours/crashes_on_level_2"] == 1.0  # mean over the samples where it worked
    # a rewarded component that fails -> None, which TRL ignores instead of counting a 0
    reward2 = to_trl_reward([exact, crashes_on_level_2])
    out2 = reward2(prompts=[r["prompt"] for r in rows], completions=["0", "2", "4"],
                   answer=[r["answer"] for r in rows], level=[r["level"] for r in rows])
    assert out2 == [2.0, 2.0, None]


def test_group_verifiers_see_the_g_completions_of_one_trl_prompt():
    sizes = []

    class Unique:
        name = "unique"

        def score_group(self, completions, task):
            sizes.append(len(completions))
            return [float(completions.count(c) == 1) for c in completions]

    reward = to_trl_reward(Rubric([Unique()]))
    out = reward(prompts=["a", "a", "a", "b", "b"], completions=["1", "1", "2", "3", "4"], answer=["x"] * 5)
    assert sorted(sizes) == [2, 3] and out == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_round_trip_rows_and_reward_functions():
    t = Task(CHAT, "1/3", info={"source": "unit"}, id="r1")
    row = task_to_row(t)
    back = row_to_task(row["prompt"], {k: [v] for k, v in row.items() if k != "prompt"}, 0)
    assert (back.prompt, back.answer, back.info, back.id) == (t.prompt, t.answer, t.info, t.id)
    with pytest.raises(ValueError, match="collides"):
        task_to_row(Task("q", info={"trainer_state": 1}))
    # ours -> TRL -> ours gives the same scores
    rubric = Rubric([exact])
    again = Rubric([from_trl(to_trl_reward(rubric))])
    comps, tasks = ["1/3", "0.3", " 1/3 "], [t, t, t]
    assert [r.reward for r in again.score_batch(comps, tasks)] == [r.reward for r in rubric.score_batch(comps, tasks)]


def digit_fraction(completions, **kwargs):
    """A TRL-native reward with variance even for a random model."""
    texts = [c[0]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


@pytest.mark.slow
def test_trl_grpo_trainer_runs_with_our_rubric(tmp_path, tiny_model_dir):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    tasks = [Task(f"What is {i}+{i}?", str(2 * i), info={"level": i % 3}, id=f"t{i}") for i in range(8)]
    ds = Dataset.from_list([task_to_row(t) for t in tasks])
    seen = []

    def length_bonus(completion, task):
        seen.append((task.answer, task.info.get("level")))
        return len(completion) / 100

    reward = to_trl_reward(Rubric([Component(length_bonus, 1.0), Component("think_answer_format", 0.0)]))
    cfg = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                     max_completion_length=8, max_steps=2, use_cpu=True, report_to="none", logging_steps=1,
                     save_strategy="no", bf16=False, learning_rate=1e-4, seed=0)
    trainer = GRPOTrainer(model=tiny_model_dir, reward_funcs=[reward, digit_fraction], args=cfg, train_dataset=ds)
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(seen) == 2 * 4  # 2 steps x 1 prompt x 4 generations
    answers = {t.answer: t.info["level"] for t in tasks}
    assert all(answers[a] == lvl for a, lvl in seen)  # the dataset columns reached our verifier's task
    logs = [h for h in trainer.state.log_history if "rlenv_reward/length_bonus" in h]
    assert len(logs) == 2
    assert all("rlenv_reward/think_answer_format" in h and "rewards/rlenv_reward/mean" in h for h in logs)
    assert all(math.isfinite(h["loss"]) for h in logs)

"""Rubric composition: weights, gates, weight-0 metrics, batch/group/async verifiers, env info."""

from __future__ import annotations

import asyncio

import pytest

import rlenv
from rlenv.core import Task
from verifiers import Component, Rubric, VerifyResult, score_metrics
from verifiers.format import TagFormat


def correct(completion, task):
    return float(completion.split("<answer>")[-1].split("</answer>")[0].strip() == task.answer)


def length(completion, task):
    return float(len(completion))


def only_for_math(completion, task):
    return None if task.info.get("kind") != "math" else 1.0


GOOD = "<think>hmm</think><answer>4</answer>"
BAD_FORMAT = "<think>hmm</answer><answer>4</answer>"  # a mismatched tag, the right answer


def test_weights_gate_and_weight_zero_metric():
    rubric = Rubric([
        Component(TagFormat(), weight=0.25, name="format"),
        Component(correct, weight=1.0, gate="format"),
        Component(length, weight=0.0),
    ])
    task = Task("2+2?", "4")
    good = rubric.score(GOOD, task)
    assert good.reward == pytest.approx(1.25)
    assert good.components == {"format": 1.0, "correct": 1.0, "length": float(len(GOOD))}
    assert good.correct is True and not good.failed
    # the gate closes: correctness does not count when the format is broken, but it is still logged
    gated = rubric.score(BAD_FORMAT, task)
    assert gated.components["format"] == 0.0
    assert gated.reward == 0.0
    assert gated.components["length"] == float(len(BAD_FORMAT))
    assert "closed by" in gated.details["format"]["reason"]


def test_gate_threshold_and_failed_gate_masks_the_sample():
    def half(completion, task):
        return 0.5

    def broken(completion, task):
        raise KeyError("no")

    t = Task("q", "4")
    r = Rubric([Component(half, 0.0), Component(correct, 1.0, gate="half", gate_threshold=0.5)]).score(GOOD, t)
    assert r.reward == 1.0
    r = Rubric([Component(half, 0.0), Component(correct, 1.0, gate="half", gate_threshold=0.6)]).score(GOOD, t)
    assert r.reward == 0.0 and not r.failed
    r = Rubric([Component(broken, 0.0), Component(correct, 1.0, gate="broken")]).score(GOOD, t)
    assert r.failed  # the reward depends on a verdict we do not have: mask, do not guess


def test_not_applicable_is_not_rewarded_and_not_failed():
    rubric = Rubric([correct, only_for_math])
    math_task = Task("q", "4", info={"kind": "math"})
    other = Task("q", "4", info={"kind": "chat"})
    assert rubric.score(GOOD, math_task).reward == 2.0
    r = rubric.score(GOOD, other)
    assert r.reward == 1.0 and not r.failed and r.verdicts["only_for_math"] == "n/a"


def test_construction_errors_are_clear():
    with pytest.raises(ValueError, match="two components named"):
        Rubric([correct, correct])
    with pytest.raises(ValueError, match="gated on unknown component 'fmt'"):
        Rubric([Component(correct, gate="fmt")])
    with pytest.raises(TypeError, match="must be a function"):
        Rubric([42])
    with pytest.raises(ValueError, match="isolation must be"):
        Component(correct, isolation="vm")
    with pytest.raises(ValueError, match="one task per completion"):
        Rubric([correct]).score_batch(["a", "b"], [Task("q")])


def test_tuples_and_registered_names():
    rubric = Rubric([(correct, 2.0), "think_answer_format"])
    r = rubric.score(GOOD, Task("q", "4"))
    assert r.components == {"correct": 1.0, "think_answer_format": 1.0}
    assert r.reward == 3.0


class CountingBatchVerifier:
    """A class verifier with score_batch: called once per batch, not once per sample."""

    name = "batched"

    def __init__(self):
        self.calls = 0

    def score_batch(self, completions, tasks):
        self.calls += 1
        return [float(c == t.answer) for c, t in zip(completions, tasks)]


def test_class_verifier_with_score_batch_is_called_once_per_batch():
    v = CountingBatchVerifier()
    rubric = Rubric([v])
    res = rubric.score_batch(["1", "2", "x"], [Task("q", "1"), Task("q", "2"), Task("q", "3")])
    assert [r.reward for r in res] == [1.0, 1.0, 0.0]
    assert v.calls == 1


def test_batch_verifier_returning_the_wrong_length_fails_its_samples():
    class Short:
        name = "short"

        def score_batch(self, completions, tasks):
            return [1.0]

    res = Rubric([Short()]).score_batch(["a", "b"], [Task("q"), Task("q")])
    assert all(r.failed for r in res)
    assert "returned 1 values for 2 completions" in res[0].details["short"]["error"]


class UniqueAnswerBonus:
    """A group verifier: rewards answers that no other completion of the same prompt gave."""

    name = "unique"

    def __init__(self):
        self.group_sizes = []

    def score_group(self, completions, task):
        self.group_sizes.append(len(completions))
        return [float(completions.count(c) == 1) for c in completions]


def test_group_verifier_sees_all_completions_of_one_prompt():
    v = UniqueAnswerBonus()
    rubric = Rubric([Component(v, 0.5), correct])
    t1, t2 = Task("a", "<answer>1</answer>", id="t1"), Task("b", "x", id="t2")
    completions = ["x", "x", "y", "p", "q", "p"]
    tasks = [t1, t1, t1, t2, t2, t2]
    res = rubric.score_batch(completions, tasks)
    assert sorted(v.group_sizes) == [3, 3]
    assert [r.components["unique"] for r in res] == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    # Rubric.score_group: one prompt's G completions
    res = rubric.score_group(["a", "b", "a"], t2)
    assert [r.components["unique"] for r in res] == [0.0, 1.0, 0.0]


def test_group_function_flag():
    def best_of_group(completions, task):
        longest = max(len(c) for c in completions)
        return [float(len(c) == longest) for c in completions]

    best_of_group.group = True
    t = Task("q")
    res = Rubric([best_of_group]).score_batch(["a", "abc", "ab"], [t, t, t])
    assert [r.reward for r in res] == [0.0, 1.0, 0.0]


def test_async_function_and_async_batch_class():
    async def async_exact(completion, task):
        await asyncio.sleep(0)
        return completion == task.answer

    class AsyncBatch:
        name = "async_batch"

        async def score_batch(self, completions, tasks):
            await asyncio.sleep(0)
            return [VerifyResult(0.5, "partial", {"n": len(completions)}) for _ in completions]

    rubric = Rubric([async_exact, AsyncBatch()])
    res = rubric.score_batch(["1", "2"], [Task("q", "1"), Task("q", "1")])
    assert [r.components["async_exact"] for r in res] == [1.0, 0.0]
    assert [r.reward for r in res] == [1.5, 0.5]
    assert res[0].details["async_batch"] == {"n": 2}


def test_every_component_lands_in_env_info_and_metrics():
    env = rlenv.SingleTurnEnv([Task("2+2?", "4")], Rubric([
        Component("think_answer_format", 0.2, name="format"),
        Component(correct, 1.0, gate="format"),
        Component(length, 0.0),
    ]))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(GOOD)
    assert terminated and reward == pytest.approx(1.2)
    assert set(info["scores"]) == {"format", "correct", "length"}
    assert info["failed"] is False and info["correct"] is True
    results = env.rubric.score_batch([GOOD, BAD_FORMAT, "junk"], [env.task] * 3)
    m = score_metrics(results)
    assert m["rewards/format"] == pytest.approx(1 / 3)
    assert m["rewards/correct"] == pytest.approx(2 / 3)  # logged even where the gate closed
    assert m["rewards/total"] == pytest.approx(1.2 / 3)
    assert m["rewards/failed_frac"] == 0.0


def test_conversation_completions_are_scored_on_the_last_assistant_turn():
    transcript = [{"role": "assistant", "content": "first try"}, {"role": "assistant", "content": GOOD}]
    assert Rubric([correct]).score(transcript, Task("q", "4")).reward == 1.0


def test_call_limits_batch_calls_and_the_verifiers_own_timeout_attribute():
    import time

    class SlowBatch:
        """Like verifiers.math: `timeout` is its own per-item limit, not a limit on the batch call."""

        name = "slow_batch"
        timeout = 0.05

        def score_batch(self, completions, tasks):
            time.sleep(0.3)  # longer than `timeout`, fine for the batch call
            return [1.0] * len(completions)

    rubric = Rubric([SlowBatch()])
    assert rubric._limit(rubric.components[0]) == rubric.batch_call_timeout
    assert all(r.reward == 1.0 for r in rubric.score_batch(["a", "b"], [Task("q")] * 2))

    def sleepy(completion, task):
        time.sleep(5)
        return 1.0

    sleepy.call_timeout = 0.2  # a verifier may declare its own call limit
    r = Rubric([sleepy]).score("a", Task("q"))
    assert r.failed and r.details["sleepy"]["failure"] == "timeout"

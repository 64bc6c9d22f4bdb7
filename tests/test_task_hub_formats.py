"""gsm8k-v0 and math-v0 on the bundled samples, which use the hub data sets' exact columns."""

import json

import pytest

import rlenv
from tasks import gsm8k, math as math_task
from tasks._data import DATA_DIR


def _solve_all(env):
    rewards = []
    for i in range(len(env.source)):
        _, info = env.reset(options={"task_index": i})
        rewards.append(env.step(info["task"].info["target"])[1])
    return rewards


def test_gsm8k_sample_has_hub_columns_and_reference_solutions_score():
    rows = [json.loads(line) for line in open(DATA_DIR / "gsm8k_main_test_sample.jsonl")]
    assert rows and all(set(r) == {"question", "answer"} and "\n#### " in r["answer"] for r in rows)
    env = rlenv.make("gsm8k-v0")
    assert _solve_all(env) == [1.0] * len(rows)


def test_gsm8k_answer_forms():
    env = rlenv.make("gsm8k-v0")
    _, info = env.reset(options={"task_index": 0})  # 72 rolls
    assert info["task"].answer == "72"
    for good in ["So the answer is\n#### 72", "The total is \\boxed{72}.", "<answer>72</answer>", "So we get 72.0"]:
        env.reset(options={"task_index": 0})
        assert env.step(good)[1] == 1.0, good
    env.reset(options={"task_index": 0})
    _, reward, _, _, info = env.step("#### 73")
    assert reward == 0.0 and info["scores"]["format"] == 1.0


def test_gsm8k_rejects_rows_without_final_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?", "answer": "no final line"}) + "\n")
    with pytest.raises(ValueError, match="####"):  # the first row is checked when the env is built
        rlenv.make("gsm8k-v0", path=str(bad)).reset(seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rlenv.make("gsm8k-v0", path=str(tmp_path / "missing.jsonl"))


def test_math_sample_hub_columns_levels_and_equivalent_forms():
    rows = [json.loads(line) for line in open(DATA_DIR / "math500_test_sample.jsonl")]
    assert all({"problem", "solution", "answer", "subject", "level", "unique_id"} <= set(r) for r in rows)
    env = rlenv.make("math-v0")
    assert _solve_all(env) == [1.0] * len(rows)
    easy = rlenv.make("math-v0", level=1)
    assert 0 < len(easy.source) < len(rows)
    idx = next(i for i, r in enumerate(rows) if r["answer"] == "\\frac{19}{12}")
    for good, want in [("\\boxed{19/12}", 1.0), ("\\boxed{\\dfrac{19}{12}}", 1.0), ("\\boxed{1.5833}", 0.0),
                       ("\\boxed{\\frac{12}{19}}", 0.0)]:
        env.reset(options={"task_index": idx})
        assert env.step(good)[1] == want, good
    with pytest.raises(ValueError, match="level"):
        rlenv.make("math-v0", level=9)


def test_math_original_layout_takes_gold_from_boxed_solution():
    row = {"problem": "1+1?", "solution": "It is $\\boxed{2}$.", "level": "Level 1", "type": "Algebra"}
    fields = math_task.to_task_row(row)
    assert fields["answer"] == "2" and fields["level"] == 1 and fields["subject"] == "Algebra"

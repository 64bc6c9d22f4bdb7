"""pass@k (unbiased estimator) and `evaluate` on the tiny random model."""

from __future__ import annotations

import itertools
import json
import math
import os

import pytest

from rlenv.core import Task
from rlenv.evaluation import evaluate, pass_at_k, write_jsonl_atomic

pytestmark = pytest.mark.usefixtures("single_thread")


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The definition: the share of all k-subsets of the n samples that hold a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_hand_computed_and_brute_force():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0 and pass_at_k(5, 5, 1) == 1.0
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k))
    assert pass_at_k(200, 13, 100) == pytest.approx(1 - math.comb(187, 100) / math.comb(200, 100))
    with pytest.raises(ValueError, match="1 ≤ k ≤ n"):
        pass_at_k(3, 1, 4)


def test_jsonl_written_atomically(tmp_path):
    path = tmp_path / "sub" / "s.jsonl"
    write_jsonl_atomic(path, [{"a": 1}])
    with pytest.raises(TypeError):  # a row that cannot be written leaves the old file intact
        write_jsonl_atomic(path, [{"a": 2}, {("tuple", "key"): 3}])
    assert path.read_text() == '{"a": 1}\n' and os.listdir(path.parent) == ["s.jsonl"]


def odd_length(completion, task):
    return float(len(completion) % 2 == 1)


def test_evaluate_reports_pass_at_k_and_writes_samples(tiny_model_dir, tmp_path):
    import rlenv

    tasks = [Task(f"Repeat {w}", w, id=w) for w in ("apple", "kiwi", "fig")]
    env = rlenv.SingleTurnEnv(tasks, [odd_length])
    out = tmp_path / "samples.jsonl"
    res = evaluate(env, tiny_model_dir, n=4, k=[1, 2, 4], out=out, max_new_tokens=6, seed=0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and res["num_tasks"] == 3 and res["n"] == 4
    assert {r["task_id"] for r in rows} == {"apple", "kiwi", "fig"}
    for r in rows:
        assert r["correct"] == (r["reward"] >= 1.0) == (len(r["completion"]) % 2 == 1)
    per_task = [sum(r["correct"] for r in rows if r["task_index"] == i) for i in range(3)]
    for k in (1, 2, 4):
        assert res[f"pass@{k}"] == pytest.approx(sum(pass_at_k(4, c, k) for c in per_task) / 3)
    assert res["pass@1"] <= res["pass@2"] <= res["pass@4"]
    assert res["verifier/odd_length"] == pytest.approx(sum(r["scores"]["odd_length"] for r in rows) / 12)
    assert res["samples_path"] == str(out) and res["failed_rate"] == 0.0
    again = evaluate(env, tiny_model_dir, n=4, k=[1, 2, 4], max_new_tokens=6, seed=0)
    assert again["pass@4"] == res["pass@4"]  # seeded: the same samples


def test_evaluate_on_a_registered_env_id(tiny_model_dir):
    import rlenv

    if "arithmetic-v0" not in rlenv.envs():
        pytest.skip("arithmetic-v0 is not registered in this checkout")
    res = evaluate("arithmetic-v0", tiny_model_dir, n=1, num_tasks=3, max_new_tokens=4)
    assert res["env"] == "arithmetic-v0" and res["num_tasks"] == 3 and 0.0 <= res["pass@1"] <= 1.0


def test_evaluate_rejects_k_above_n(tiny_model_dir):
    with pytest.raises(ValueError, match="between 1 and n=2"):
        evaluate("arithmetic-v0", tiny_model_dir, n=2, k=[1, 4])

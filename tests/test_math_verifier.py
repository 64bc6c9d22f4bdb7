"""verifiers.math: the labelled case file, extraction, normalisation, hard time limits, the verifier."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import verifiers
from rlenv import Task
from verifiers.math import MathVerifier, extract_answer, is_equivalent, is_equivalent_batch, normalize
from verifiers.workers import WorkerPool

CASES_PATH = os.path.join(os.path.dirname(__file__), "data", "math_cases.jsonl")
CATEGORIES = {"numbers", "fractions", "latex_notation", "units_percent", "symbolic", "equations", "inequalities",
              "intervals", "sets_tuples", "matrices", "multiple_answers", "text", "extraction", "hostile",
              "multiple_choice", "near_miss"}
# generous: these check "returns at all" (a hang would take minutes), not speed; the benchmark measures speed
HANG_LIMIT_S = 15.0


def load_cases():
    with open(CASES_PATH) as f:
        return [json.loads(line) for line in f if line.strip()]


CASES = load_cases()


def test_case_file_shape():
    assert len(CASES) >= 300
    for r in CASES:
        assert set(r) == {"gold", "pred", "equivalent", "category", "source"}, r
        assert isinstance(r["equivalent"], bool) and r["source"].strip()
    counts = collections.Counter(r["category"] for r in CASES)
    assert set(counts) == CATEGORIES
    # both verdicts occur in every category that decides anything
    for cat in CATEGORIES:
        labels = {r["equivalent"] for r in CASES if r["category"] == cat}
        assert labels == {True, False}, cat


@pytest.fixture(scope="module")
def batch_verdicts():
    return is_equivalent_batch([(r["gold"], r["pred"]) for r in CASES], workers=2)


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_case_file_all_correct(category, batch_verdicts):
    wrong = [(r["gold"][:80], r["pred"][:80], r["equivalent"]) for r, v in zip(CASES, batch_verdicts)
             if r["category"] == category and v != r["equivalent"]]
    assert wrong == []


def test_single_calls_agree_with_batch(batch_verdicts):
    # a sample through the one-pair API, including every hostile pair
    idx = [i for i, r in enumerate(CASES) if r["category"] == "hostile" or i % 7 == 0]
    for i in idx:
        assert is_equivalent(CASES[i]["gold"], CASES[i]["pred"]) == batch_verdicts[i], CASES[i]["pred"][:80]


@pytest.mark.parametrize("gold,pred,expected", [
    ("\\frac{1}{2}", "0.5", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\tan^2(y)+1", "\\sec^2(y)", True),
    ("(1,2)", "(2,1)", False),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("x<1", "-x>-1", True),
    ("[0,1)", "(0,1)", False),
    ("1000000", "10^6", True),
    ("0.1", "0.1000001", True),  # relative tolerance 1e-6
    ("1/3", "0.333", False),
    ("3", "3.0000000000000000000001", True),
    ("100000000000000000001", "100000000000000000000", False),  # exact integers stay exact
])
def test_equivalence_examples(gold, pred, expected):
    assert is_equivalent(gold, pred) is expected


@pytest.mark.parametrize("gold,pred,precision,expected", [
    ("\\frac{8}{3}", "2.67", 2, True),       # agrees to 2 places
    ("\\frac{8}{3}", "2.67", None, False),   # the default is 6 places
    ("\\frac{8}{3}", "2.66", 2, False),      # truncated, not rounded
    ("1/3", "0.3333", 4, True),
    ("1/3", "0.3333", 5, False),
    ("1/3", "0.333333", None, True),
    ("100", "101", 0, False),                 # exact numbers stay exact at any precision
    ("100", "100.4", 0, True),
    ("0.0012", "0.0015", 2, False),           # both round to 0.00, but they are not the same number
    ("(\\frac{3}{5}, \\frac{8}{3}]", "(0.6, 2.6667]", 2, True),
    ("\\pi", "3.14159", None, False),
    ("\\pi", "3.14", 2, True),
])
def test_precision_option(gold, pred, precision, expected):
    assert is_equivalent(gold, pred, precision=precision) is expected


@pytest.mark.parametrize("bad", [-1, 31, 2.5, "2", True])
def test_a_bad_precision_is_refused_with_a_clear_error(bad):
    with pytest.raises(ValueError, match="precision"):
        is_equivalent("1", "1", precision=bad)
    with pytest.raises(ValueError, match="precision"):
        MathVerifier(precision=bad)


@pytest.mark.parametrize("gold,pred,lenient", [
    ("f(x)", "f(y)", True), ("x+1", "t+1", True), ("x+2y", "y+2x", True), ("(x, y)", "(a, b)", True),
    ("x^2", "y", False), ("x+y", "x", False), ("2x", "3t", False),
])
def test_strict_option(gold, pred, lenient):
    assert is_equivalent(gold, pred) is False  # strict (the default): names must match
    assert is_equivalent(gold, pred, strict=False) is lenient


def test_verifier_options_reach_the_comparison():
    task = Task(prompt="8/3 to two places?", answer="\\frac{8}{3}")
    assert MathVerifier().score("\\boxed{2.67}", task).reward == 0.0
    assert MathVerifier(precision=2).score("\\boxed{2.67}", task).reward == 1.0
    task = Task(prompt="f?", answer="f(x) = x^2")
    assert MathVerifier(strict=False).score("\\boxed{f(t) = t^2}", task).reward == 1.0


@pytest.mark.parametrize("text,answer", [
    ("so it is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("first \\boxed{3}. Checking it again, the result is \\boxed{4}", "4"),
    ("roots \\boxed{1} and \\boxed{2}", "1, 2"),
    ("<think>maybe 3</think><answer> 7 </answer>", "7"),
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("we find the total cost is 1,234.50 dollars in the end today", "1234.50"),
    ("\\frac{3}{4}", "\\frac{3}{4}"),
    ("", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("raw,norm", [
    ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
    ("\\left( 1, 2 \\right)", "( 1, 2 )"),
    ("10\\text{ cm}^2", "10"),
    ("90^\\circ", "90"),
    ("45\\%", "45"),
    ("1,234,567", "1234567"),
    ("14{,}916", "14916"),
    ("\\$5.", "5"),
    ("3\\!\\,\\;x", "3 x"),
    ("\\text{(C)}", "C"),
])
def test_normalize(raw, norm):
    assert normalize(raw) == norm


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=200), st.text(alphabet="\\{}()[]^_0123456789x+-*/=<>,.$ frac sqrt boxed", max_size=120))
def test_never_raises_on_any_string(a, b):
    assert is_equivalent(a, b) in (True, False)
    assert is_equivalent(b, a) in (True, False)


@pytest.mark.parametrize("gold,pred", [(None, "1"), ("1", None), (1, "1"), ("1", b"1"), ("1", ["1"])])
def test_non_string_inputs_do_not_raise(gold, pred):
    assert is_equivalent(gold, pred) in (True, False)


def test_hard_limit_from_a_thread():
    """The limit is a worker kill, not signal.alarm: it holds in a non-main thread."""
    out = {}

    def run():
        t = time.monotonic()
        out["slow"] = is_equivalent("0", "\\binom{10^{9}}{5 \\cdot 10^{8}}", timeout=0.5)
        out["elapsed"] = time.monotonic() - t
        out["after"] = is_equivalent("x^2-1", "(x-1)(x+1)")

    th = threading.Thread(target=run)
    th.start()
    th.join(HANG_LIMIT_S)
    assert not th.is_alive()
    assert out == {"slow": False, "elapsed": out["elapsed"], "after": True}
    assert out["elapsed"] < HANG_LIMIT_S


def test_works_in_a_fresh_process_without_main_guard():
    """A user script without `if __name__ == "__main__"` must not re-execute itself in the workers."""
    code = ("from verifiers.math import is_equivalent\n"
            "print(is_equivalent('x^2-1', '(x-1)(x+1)'), is_equivalent('1', '9**9**9**9'))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "False"]


def test_pool_kills_and_respawns_a_stuck_worker():
    pool = WorkerPool("time:sleep", workers=1)
    try:
        t = time.monotonic()
        res = pool.map([(30,), (0,)], timeout=0.5, on_timeout="timeout")
        assert res == ["timeout", None]
        assert time.monotonic() - t < HANG_LIMIT_S
        assert pool.timeouts == 1 and pool.killed == 1
        assert pool.map([(0,)], timeout=5) == [None]  # the replacement worker serves
    finally:
        pool.close()


def test_worker_exception_is_a_false_not_a_crash():
    pool = WorkerPool("math:sqrt", workers=1)
    try:
        assert pool.map([(-1,), (4,)], timeout=5, on_timeout=False) == [False, 2.0]
    finally:
        pool.close()


def test_gold_parse_is_cached():
    from verifiers.math.compare import judge
    from verifiers.math.structure import parse_answer

    judge("\\frac{7}{11}", "7/11")
    before = parse_answer.cache_info().hits
    for pred in ("14/22", "0.636363636363", "\\frac{7}{12}"):
        judge("\\frac{7}{11}", pred)
    assert parse_answer.cache_info().hits >= before + 3


def test_math_verifier_scores_and_registers():
    v = MathVerifier()
    task = Task(prompt="What is half of one?", answer="\\frac{1}{2}")
    good = v.score("Half of one is \\boxed{0.5}.", task)
    assert (good.reward, good.verdict, good.details["extracted"]) == (1.0, "correct", "0.5")
    bad = v.score([{"role": "assistant", "content": "It is \\boxed{2}."}], task)
    assert (bad.reward, bad.verdict) == (0.0, "incorrect")
    assert v.score("\\boxed{1}", Task(prompt="q", answer=None)).verdict == "n/a"
    results = v.score_batch(["\\boxed{1/2}", "no idea", "#### 0.5"], [task] * 3)
    assert [r.reward for r in results] == [1.0, 0.0, 1.0]
    assert isinstance(verifiers.get("math"), MathVerifier)


def _score_in_daemon(q):
    q.put([r.reward for r in MathVerifier().score_batch(["\\boxed{0.5}", "\\boxed{2}"], ["1/2", "1/2"])])


def test_works_inside_a_daemonic_worker_process():
    """verifiers.workers.WorkerPool runs heavy verifiers in daemon processes, which may not fork."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_score_in_daemon, args=(q,), daemon=True)
    p.start()
    try:
        assert q.get(timeout=60) == [1.0, 0.0]
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()

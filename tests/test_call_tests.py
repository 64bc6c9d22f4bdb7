"""APPS-style call tests and type-strict comparison: expected values are JSON data compared in the
parent, so no name the solution defines can change them; strict mode tells True from 1."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from sandbox_helpers import require_bwrap

from rlenv import Task
from verifiers.code import CallTest, CodeVerifier, json_equal, parse_tests, run_tests, strict_equal


@pytest.fixture(autouse=True)
def _real_sandbox():
    require_bwrap()


# what APPS stores: the JSON text of input_output, every output wrapped in a one-element list
APPS = json.dumps({"fn_name": "classify", "inputs": [[0], [1], [2], [3]],
                   "outputs": [[None], [True], [False], [{"n": 3, "odd": True, "parts": [1, 2]}]]})
RIGHT = """
def classify(n):
    if n == 0:
        return None
    if n < 3:
        return n == 1
    return {"n": n, "odd": n % 2 == 1, "parts": (1, 2)}
"""


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


def test_json_true_false_null_are_python_values():
    cases, skipped = parse_tests(APPS)
    assert [c.expected for c in cases] == [[None], [True], [False], [{"n": 3, "odd": True, "parts": [1, 2]}]]
    assert all(isinstance(c, CallTest) for c in cases) and skipped == 0
    rep = run_tests(RIGHT, APPS)
    assert (rep.passed, rep.total) == (4, 4), rep.feedback
    # the same tests as a dict (already-decoded JSON) and unwrapped outputs
    plain = {"fn_name": "classify", "inputs": [[0], [1], [2]], "outputs": [None, True, False]}
    assert run_tests(RIGHT, plain).passed == 3


@pytest.mark.parametrize("cheat", [
    "true = false = null = 0\ndef classify(n):\n    return 0",
    "import builtins\nbuiltins.true = builtins.false = builtins.null = 0\nTrue_, None_ = 0, 0\n"
    "def classify(n):\n    return 0",
    # an object equal to everything, and one that claims to be a bool or None
    "class Any:\n    def __eq__(self, o): return True\n    __hash__ = None\ndef classify(n):\n    return Any()",
    "class B(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\ndef classify(n):\n    return B(0)",
    # patching json or the encoder only changes what the solution itself reports (here: 0 each time)
    "import json, os\ndef dumps(o, *a, **k):\n    return '{\"q\": %d, \"v\": 0}' % o.get('q', 0)\n"
    "json.dumps = dumps\ndef classify(n):\n    return 0",
])
def test_redefining_names_of_expected_values_earns_nothing(cheat):
    rep = run_tests(cheat, APPS)
    assert rep.passed == 0, rep.outcomes
    r = CodeVerifier(mode="fraction").score(fence(cheat), Task("x", answer=APPS, id="apps"))
    assert r.reward == 0.0 and not r.failed, r


def test_a_name_in_an_assert_style_expected_value_is_never_the_solutions():
    tests = ["from fractions import Fraction\nassert half(1) == Fraction(1, 2)"]
    assert run_tests("def half(x):\n    return x / 2\n", tests).passed == 1  # 0.5 == Fraction(1, 2)
    cheat = "def Fraction(*a):\n    return 7\ndef half(x):\n    return 7\n"
    assert run_tests(cheat, tests).passed == 0
    # a name nobody defines is refused when the tests are built, not looked up in the solution
    for bad in (["assert half(1) == true"], ["assert half(1) == Fraction(1, 2)"], ["assert half(1) == Infinity"]):
        with pytest.raises(ValueError, match="nothing defines them|do not define"):
            parse_tests(bad)
    r = CodeVerifier().score(fence("true = 0.5\ndef half(x):\n    return 0.5"), Task("x", answer=["assert half(1) == true"]))
    assert r.failed and "True/False/None" in r.details["error"]


def test_expected_values_that_are_not_json_data_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"outputs\[1\] is a Fraction"):
        parse_tests({"fn_name": "f", "inputs": [[1], [2]], "outputs": [1, Fraction(1, 2)]})
    with pytest.raises(ValueError, match=r"outputs\[0\] is inf.*Infinity/NaN are not JSON"):
        parse_tests('{"fn_name": "f", "inputs": [[1]], "outputs": [Infinity]}')
    with pytest.raises(ValueError, match=r"inputs\[0\] must be the list"):
        parse_tests({"fn_name": "f", "inputs": [1], "outputs": [1]})
    with pytest.raises(ValueError, match="same length"):
        parse_tests({"fn_name": "f", "inputs": [[1]], "outputs": []})
    r = CodeVerifier().score(fence("def f(x):\n    return x"),
                             Task("x", answer={"fn_name": "f", "inputs": [[1]], "outputs": [Fraction(1, 2)]}, id="frac"))
    assert r.failed and "'frac'" in r.details["error"] and "not JSON data" in r.details["error"]


def test_strict_types_tell_true_from_1_and_2_0_from_2():
    # call tests: JSON semantics by default (true is not 1; 2 and 2.0 are one JSON number)
    calls = {"fn_name": "f", "inputs": [[0], [1]], "outputs": [True, 2]}
    loose = "def f(x):\n    return [1, 2.0][x]\n"
    assert [o["passed"] for o in run_tests(loose, calls).outcomes] == [False, True]
    assert run_tests(loose, dict(calls, strict_types=True)).passed == 0
    assert run_tests("def f(x):\n    return [True, 2][x]\n", dict(calls, strict_types=True)).passed == 2
    # assert-style: Python's == by default (the test's author wrote Python), strict on request
    asserts = ["assert f(0) == True", "assert f(1) == 2", "assert f(2) == (1, 2)", "assert f(3) != 1"]
    src = "def f(x):\n    return [1, 2.0, (1, 2), True][x]\n"
    assert [o["passed"] for o in run_tests(src, asserts).outcomes] == [True, True, True, False]
    assert [o["passed"] for o in run_tests(src, asserts, strict=True).outcomes] == [False, False, True, True]
    task = Task("x", answer=asserts, info={"strict_types": True})
    assert CodeVerifier(mode="fraction").score(fence(src), task).reward == 0.5
    assert CodeVerifier(mode="fraction", strict_types=False).score(fence(src), task).reward == 0.75


def test_the_comparisons_themselves():
    assert strict_equal({1: [True, 2.0]}, {1: [True, 2.0]}) and not strict_equal({1: 1}, {True: 1})
    assert not strict_equal({1, 2}, {True, 2}) and not strict_equal((1,), [1]) and not strict_equal(0, False)
    assert json_equal((1, [2.0]), [1, [2]]) and not json_equal(1, True) and not json_equal(0, None)
    assert not json_equal({"a": 1}, {"a": 1, "b": None}) and json_equal({"a": (1,)}, {"a": [1.0]})


def test_apps_solution_class_and_feedback():
    tests = {"fn_name": "twoSum", "inputs": [[[2, 7, 11], 9], [[3, 3], 6]], "outputs": [[[0, 1]], [[0, 1]]]}
    leetcode = "class Solution:\n    def twoSum(self, xs, t):\n        return [0, 1]\n"
    assert run_tests(leetcode, tests).passed == 2
    rep = run_tests("def twoSum(xs, t):\n    return [1, 0]\n", tests)
    assert rep.passed == 0 and "twoSum([2, 7, 11], 9) returned [1, 0]" in rep.feedback
    rep = run_tests("def twoSum(xs, t):\n    raise KeyError(t)\n", tests)
    assert "raised KeyError: 9" in rep.feedback
    rep = run_tests("import sys\nsys.exit(0)\n", tests)
    assert rep.passed == 0 and "failed to load: SystemExit" in rep.feedback

"""The code verifier and test runner: test formats, parent-side judging, rewards, feedback, tiers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sandbox_helpers import require_bwrap

from rlenv import Task
from verifiers.code import (CallTest, CodeVerifier, Limits, SandboxPool, StdioTest, extract_code, parse_tests,
                            run_python, run_tests)

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(autouse=True)
def _real_sandbox():
    require_bwrap()


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


def test_run_python_statuses_and_fields():
    r = run_python("import sys\nprint(sys.stdin.read().upper())\nprint('e', file=sys.stderr)", stdin="hi")
    assert (r.status, r.stdout, r.stderr, r.exit_code, r.tier) == ("ok", "HI\n", "e\n", 0, "bwrap")
    assert 0 < r.wall_time < 5
    r = run_python("raise SystemExit(3)")
    assert (r.status, r.exit_code) == ("error", 3)


def test_cpu_time_limit_below_the_wall_clock_limit():
    r = run_python("while True:\n    pass", limits=Limits(timeout=30, cpu_seconds=1))
    assert (r.status, r.reason) == ("timeout", "CPU time limit"), r


def test_file_size_and_scratch_limits():
    r = run_python("open('big', 'wb').write(b'x' * (3 << 20))\nprint('WROTE')", limits=Limits(max_file_mb=1))
    assert r.status in ("killed", "error") and "WROTE" not in r.stdout, r  # SIGXFSZ or "File too large"
    r = run_python("for i in range(8):\n    open(f'f{i}', 'wb').write(b'x' * (600 << 10))\nprint('WROTE')",
                   limits=Limits(max_file_mb=1))
    assert r.status == "error" and "No space left" in r.stderr, r  # the tmpfs holds max_file_mb in all


def test_a_sandbox_failure_is_infrastructure_and_cannot_be_faked(tmp_path):
    import shutil

    from verifiers.code import run_argv

    missing = run_argv(["-c", "pass"], python="/nonexistent/bin/python3")
    assert missing.sandbox_error and "not executable" in missing.reason, missing
    if os.geteuid() == 0:
        # an interpreter in a root-only directory: bwrap (as the run's uid) cannot bind it, so it
        # never reports the program's exit code
        (tmp_path / "bin").mkdir()
        hidden = shutil.copy(os.path.realpath("/usr/bin/python3"), tmp_path / "bin" / "python3")
        os.chmod(tmp_path, 0o700)
        broken = run_argv(["-c", "print(1)"], python=str(hidden))
        assert broken.sandbox_error and broken.status == "killed" and "bwrap" in broken.reason, broken
    fake = run_python("import sys\nprint(\"bwrap: Can't fork for pid 1\", file=sys.stderr)\nsys.exit(1)")
    assert not fake.sandbox_error and fake.status == "error", fake


def test_large_stdin_is_fed_without_deadlock():
    data = "x" * 3_000_000
    r = run_python("import sys\nprint(len(sys.stdin.read()))", stdin=data, timeout=10)
    assert r.status == "ok" and r.stdout.strip() == str(len(data)), r


def test_bad_arguments_get_one_clear_error():
    with pytest.raises(TypeError, match="source must be a str"):
        run_python(b"print(1)")
    with pytest.raises(ValueError, match="Limits.timeout"):
        Limits(timeout=0)
    assert "larger than" in run_python("#" * 200_000).reason


def test_mbpp_asserts_fraction_and_all():
    tests = ["assert add(1, 2) == 3", "assert add('a', 'b') == 'ab'", "assert add([1], [2]) == [1, 2]"]
    assert run_tests(ADD, tests).passed == 3
    half = "def add(a, b):\n    return a + b if isinstance(a, int) else None\n"
    rep = run_tests(half, tests)
    assert (rep.passed, rep.total, rep.reward("all"), round(rep.reward("fraction"), 3)) == (1, 3, 0.0, 0.333)
    assert "add('a', 'b') returned None" in rep.feedback


def test_humaneval_check_candidate_counts_every_assert_including_loops():
    answer = {"test": "import math\nMETADATA = {}\n\ndef check(candidate):\n"
                      "    assert math.isclose(candidate(2), 1.4142135623730951)\n"
                      "    assert abs(candidate(9) - 3.0) < 1e-6\n"
                      "    for i in range(3):\n        assert candidate(i * i) == i\n"
                      "    assert True, 'tests nothing: not counted'\n",
              "entry_point": "root"}
    rep = run_tests("def root(x):\n    return x ** 0.5\n", answer)
    assert (rep.passed, rep.total, rep.skipped) == (3, 3, 1)
    # right on the two spot checks, wrong inside the loop: the loop's assert fails
    rep = run_tests("def root(x):\n    return x ** 0.5 if x in (2, 9) else 0\n", answer)
    assert [o["passed"] for o in rep.outcomes] == [True, True, False]
    assert "root(1) returned 0" in rep.outcomes[2]["message"]


def test_helpers_and_locals_of_the_test_code_are_the_judges_own():
    answer = {"test": "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n"
                      "def check(candidate):\n    xs = [1, 2]\n    assert candidate(xs) == 3\n"
                      "    assert abs(poly([1, 1], candidate([-1, 0]))) < 1e-6\n    assert candidate([1]) == 1\n",
              "entry_point": "total"}
    (suite,), skipped = parse_tests(answer)
    assert suite.asserts == ("candidate(xs) == 3", "abs(poly([1, 1], candidate([-1, 0]))) < 1e-06",
                             "candidate([1]) == 1") and skipped == 0
    assert run_tests("def total(xs):\n    return sum(xs)\n", answer).passed == 3
    # the solution's own `poly` is not the one the tests use
    cheat = "def poly(*a):\n    return 0\ndef total(xs):\n    return {(1, 2): 3, (1,): 1}.get(tuple(xs), 99)\n"
    assert [o["passed"] for o in run_tests(cheat, answer).outcomes] == [True, False, True]
    with pytest.raises(ValueError, match="entry_point"):
        parse_tests("def check(candidate):\n    assert candidate(1) == 1\n")


def test_solution_objects_are_stand_ins_that_never_compare_equal():
    tests = {"tests": ["assert max_chain([Pair(5, 24), Pair(15, 25), Pair(27, 40)], 3) == 2",
                       "assert Solution().twice(4) == 8", "assert list(evens(5)) == [0, 2, 4]",
                       "assert str(Pair(1, 2)) == 'Pair(1, 2)' and len(Pair(1, 2)) == 2",
                       "assert math.isclose(area(1), 3.14159, rel_tol=1e-3)",  # MBPP leaves `math` unimported
                       "assert Pair(1, 2) == Pair(1, 2)",  # two solution objects: their __eq__ is never asked
                       "assert Pair(1, 2)"],  # nor their truth value
             "entry_point": ["Pair", "max_chain", "Solution", "evens", "area"]}
    src = ("import math\nclass Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
           "    def __eq__(self, o):\n        return True\n    def __bool__(self):\n        return True\n"
           "    def __len__(self):\n        return 2\n    def __repr__(self):\n        return f'Pair({self.a}, {self.b})'\n"
           "def max_chain(ps, n):\n    end, k = None, 0\n    for p in sorted(ps, key=lambda p: p.b):\n"
           "        if end is None or p.a > end:\n            end, k = p.b, k + 1\n    return k\n"
           "class Solution:\n    def twice(self, x):\n        return 2 * x\n"
           "def evens(n):\n    yield from range(0, n, 2)\n"
           "def area(r):\n    return math.pi * r * r\n")
    rep = run_tests(src, tests)
    assert [o["passed"] for o in rep.outcomes] == [True] * 5 + [False, False], rep.feedback
    assert "no truth value" in rep.outcomes[6]["message"]
    with pytest.raises(ValueError, match="entry_point=\\['f', 'g'\\]"):
        parse_tests(["assert f(1) == g(1)"])  # two names from the solution: say which


def test_apps_call_based_and_stdio_formats():
    cases, _ = parse_tests({"fn_name": "add", "inputs": [[1, 2], [[1], [2]]], "outputs": [3, [1, 2]]})
    assert all(isinstance(c, CallTest) for c in cases)
    assert run_tests(ADD, cases).passed == 2
    stdio, _ = parse_tests({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
    assert all(isinstance(c, StdioTest) for c in stdio)
    prog = "a, b = map(int, input().split())\nprint(a + b)   "
    assert run_tests(prog, stdio).passed == 2
    assert run_tests("print(3)", stdio).passed == 1


def test_python_equality_semantics_hold_across_the_boundary():
    # the values are rebuilt here as real Python objects: tuple != list, 1 == 1.0, sets unordered
    tests = ["assert f(0) == (1, 2)", "assert f(1) == 1.0", "assert f(2) == {3, 1, 2}", "assert f(3) == {'k': [1]}",
             "assert f(4) != [1, 2]", "assert f(5) == float('inf')", "assert f(6) == b'\\x00'"]
    src = ("def f(i):\n    return [[1, 2], 1, {1, 2, 3}, {'k': [1]}, (1, 2), float('inf'), b'\\x00'][i]\n")
    rep = run_tests(src, tests)
    assert [o["passed"] for o in rep.outcomes] == [False, True, True, True, True, True, True]


def test_exceptions_timeouts_and_load_errors_fail_only_their_tests():
    tests = ["assert f(1) == 1", "assert f(0) == 0", "assert f(2) == 2"]
    rep = run_tests("def f(x):\n    return x if x else 1 / 0\n", tests)
    assert [o["passed"] for o in rep.outcomes] == [True, False, True]
    assert "ZeroDivisionError" in rep.outcomes[1]["message"]
    rep = run_tests("def f(x):\n    while x == 2:\n        pass\n    return x\n", tests, limits=Limits(timeout=1))
    assert [o["passed"] for o in rep.outcomes] == [True, True, False]
    assert "timeout" in rep.outcomes[2]["message"]
    rep = run_tests("def f(x) return x", tests)
    assert rep.passed == 0 and "SyntaxError" in rep.feedback


def test_verifier_scores_extracts_and_reports():
    v = CodeVerifier()
    task = Task("Write add.", answer=["assert add(1, 2) == 3", "assert add(2, 2) == 4"], id="t")
    good = v.score(fence("print('draft')") + "Better:\n" + fence(ADD), task)
    assert (good.reward, good.verdict, good.details["passed"], good.details["tier"]) == (1.0, "correct", 2, "bwrap")
    wrong = CodeVerifier(mode="fraction").score(fence("def add(a, b):\n    return 3"), task)
    assert (wrong.reward, wrong.verdict) == (0.5, "partial")
    assert "add(2, 2) returned 3" in wrong.details["feedback"]
    none = v.score("I would use a + b.", task)
    assert (none.reward, none.verdict, none.failed) == (0.0, "incorrect", False)
    assert v.score([{"role": "assistant", "content": fence(ADD)}], task).reward == 1.0


def test_task_info_entry_point_and_prefix():
    task = Task("x", answer="def check(candidate):\n    assert candidate([3, 1]) == [1, 3]\n",
                info={"entry_point": "sort_it", "code_prefix": "from typing import List"}, id="he")
    r = CodeVerifier().score(fence("def sort_it(xs: List[int]) -> List[int]:\n    return sorted(xs)"), task)
    assert r.reward == 1.0, r
    # `candidate` in plain asserts is the entry point too
    loose = Task("x", answer=["assert candidate([2, 1]) == [1, 2]"], info={"entry_point": "sort_it"})
    assert CodeVerifier().score(fence("def sort_it(xs):\n    return sorted(xs)"), loose).reward == 1.0


def test_unreadable_tests_are_an_infrastructure_failure_not_a_zero():
    v = CodeVerifier()
    r = v.score(fence(ADD), Task("x", answer={"weird": 1}, id="bad"))
    assert r.failed and "unknown answer keys" in r.details["error"]
    r = v.score(fence(ADD), Task("x", answer=["assert 1 + 1 == 2"], id="nothing"))
    assert r.failed and "never use the solution" in r.details["error"]
    r = v.score(fence(ADD), Task("x", answer=["assert add(1, 1) == true"], id="json-in-python"))
    assert r.failed and "['true']" in r.details["error"] and "True" in r.details["error"]


def test_score_batch_with_a_small_pool():
    with SandboxPool(2) as pool:
        v = CodeVerifier(pool=pool)
        task = Task("x", answer=["assert add(1, 1) == 2"])
        outs = v.score_batch([fence(ADD), fence("def add(a, b):\n    return 0"), "no code"] * 3, [task] * 9)
    assert [o.reward for o in outs] == [1.0, 0.0, 0.0] * 3


def test_registered_as_code():
    from verifiers.registry import get

    assert isinstance(get("code"), CodeVerifier)
    assert get("code", mode="fraction").mode == "fraction"


def test_extract_code_takes_the_last_python_fence():
    text = "```python\nA\n```\ntext\n```py\nB\n```\n```\nC\n```"
    assert extract_code(text) == "B"
    assert extract_code("```\nonly\n```") == "only"
    assert extract_code("none") is None


def test_the_sandbox_works_without_root():
    # the same library driven by an unprivileged user: no uid switch, no cgroups, still bwrap
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[1]
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root to switch to an unprivileged user, and /usr/bin/python3")
    if any(not (p.stat().st_mode & 0o005) for p in [repo, *repo.parents, repo / "verifiers"] if str(p) != "/"):
        pytest.skip(f"{repo} is not readable by other users")
    code = (f"import sys, json\nsys.path.insert(0, {str(repo)!r})\n"
            "from verifiers.code import run_python, sandbox_tier, Limits\n"
            "net = run_python('import socket\\nsocket.create_connection((\"127.0.0.1\", 9), timeout=1)')\n"
            "bomb = run_python('import os, time\\nn = 0\\ntry:\\n    while True:\\n        if os.fork() == 0:\\n"
            "            time.sleep(30)\\n            os._exit(0)\\n        n += 1\\nexcept OSError:\\n    print(n)',"
            " limits=Limits(max_processes=16, timeout=10))\n"
            "print(json.dumps([sandbox_tier(), run_python('print(6 * 7)').stdout, net.status, bomb.stdout]))")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", code],
                         capture_output=True, text=True, timeout=60, cwd="/tmp", env={"PATH": "/usr/bin:/bin"})
    tier, stdout, net_status, forked = json.loads(out.stdout.strip().splitlines()[-1])
    assert (tier, stdout, net_status) == ("bwrap", "42\n", "error"), out.stderr
    assert int(forked) <= 16

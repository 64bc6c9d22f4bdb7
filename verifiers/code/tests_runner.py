"""Judge a program against a task's tests; the verdict never depends on the program's own code.

Three test formats (docs/sandbox.md says how each decides, and which comparison it uses by default):

* **stdin/stdout pairs** (APPS, CodeContests): each input runs in its own fresh sandbox; the run
  must exit 0 and its stdout must equal the expected output (trailing whitespace ignored) — text,
  compared here.
* **call tests** (APPS ``fn_name``/``inputs``/``outputs``): the sandbox runs the calls and sends
  back the return values as tagged plain data; the expected values (JSON) stay here and are
  compared here (:mod:`._calls`).
* **assert-style tests** (MBPP ``test_list``, HumanEval ``check(candidate)``, any asserts): the test
  code runs whole in a judge sandbox of its own and reaches the solution, in another sandbox, only
  through plain data (:mod:`._asserts`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from ._asserts import AssertTests, judge_asserts, parse_asserts
from ._calls import CallTest, judge_calls, parse_call_tests
from .pool import SandboxPool, default_pool
from .sandbox import OK, ExecResult, Limits


@dataclasses.dataclass
class StdioTest:
    """Run the program with ``input`` on stdin; pass when it exits 0 printing ``output``."""

    input: str
    output: str


@dataclasses.dataclass
class TestReport:
    """How a program fared: per-test outcomes, the count passed, and feedback text for the model.

    ``runs`` are the solution's sandbox runs; ``judge_runs`` those of the judge (assert-style tests);
    ``infra_error`` is set when the task's own test code failed — not a judgement of the program.
    """

    passed: int
    total: int
    outcomes: list  # one dict per test: {"passed": bool, "test": str, "message": str}
    feedback: str
    runs: list
    skipped: int = 0
    judge_runs: list = dataclasses.field(default_factory=list)
    infra_error: str = ""

    def reward(self, mode: str = "all") -> float:
        """``all``: 1.0 when every test passed, else 0.0. ``fraction``: the share passed."""
        if self.total == 0:
            return 0.0
        if mode == "all":
            return 1.0 if self.passed == self.total else 0.0
        if mode == "fraction":
            return self.passed / self.total
        raise ValueError(f"reward mode must be 'all' or 'fraction', got {mode!r}")


def parse_tests(answer: Any, entry_point: Any = None, strict: Optional[bool] = None) -> tuple[list, int]:
    """Normalise a task's ``answer`` into tests; returns ``(tests, skipped)``. Accepted shapes:

    * ``[{"input": "1 2\\n", "output": "3\\n"}, …]`` or ``{"inputs": [...], "outputs": [...]}`` — stdio;
    * ``{"fn_name": "f", "inputs": [[args…], …], "outputs": [...]}`` — APPS call tests, also as the
      JSON text APPS stores (``input_output``);
    * ``["assert f(1) == 2", …]`` or a code string of asserts / ``def check(candidate)`` — assert-style,
      optionally as ``{"tests": …, "entry_point": "f" or [names], "setup": trusted code}`` (also
      ``test_list`` / ``test``).

    ``strict`` (or the answer's ``"strict_types": true``) makes comparisons type-strict: ``True`` is
    not ``1``, ``2.0`` is not ``2``. Raises ``ValueError`` naming the problem for tests it cannot read.
    """
    if isinstance(answer, str) and answer.lstrip().startswith("{"):
        try:
            answer = json.loads(answer)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"code tests: the answer looks like JSON but does not parse ({e})") from None
    if isinstance(answer, dict):
        entry_point = answer.get("entry_point", entry_point)
        strict = answer.get("strict_types", False) if strict is None else strict
        if "input_output" in answer:
            return parse_tests(answer["input_output"], entry_point, strict)
        if "fn_name" in answer and "inputs" in answer:
            return parse_call_tests(answer, bool(strict)), 0
        if "inputs" in answer and "outputs" in answer:
            return [StdioTest(str(i), str(o)) for i, o in zip(answer["inputs"], answer["outputs"])], 0
        for key in ("tests", "test_list", "test"):
            if key in answer:
                suite = parse_asserts(answer[key], entry_point, answer.get("setup") or "", bool(strict))
                return [suite], suite.skipped
        raise ValueError(f"code tests: unknown answer keys {sorted(answer)}; expected 'inputs'/'outputs', "
                         "'fn_name', 'tests', 'test_list' or 'test'")
    if isinstance(answer, (list, tuple)) and answer and all(isinstance(t, dict) for t in answer):
        try:
            return [StdioTest(str(t["input"]), str(t["output"])) for t in answer], 0
        except KeyError as e:
            raise ValueError(f"stdio test is missing the field {e}; each needs 'input' and 'output'") from None
    if isinstance(answer, (str, list, tuple)) and answer:
        suite = parse_asserts(answer, entry_point, "", bool(strict))
        return [suite], suite.skipped
    raise ValueError(f"code tests: cannot read tests from a {type(answer).__name__}; see verifiers.code.parse_tests")


# ---------------------------------------------------------------------------------------------
# running and judging


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").split("\n")).rstrip()


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.rstrip().split("\n")[-n:])


def _short(v, n: int = 200) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "…"


def _judge_stdio(source: str, tests: list, limits: Limits, pool: SandboxPool, stop_early: bool) -> tuple[list, list]:
    futs = [pool.submit(source, t.input, limits) for t in tests]
    outcomes, runs, failed = [], [], False
    for t, f in zip(tests, futs):
        if failed and stop_early and f.cancel():
            outcomes.append({"passed": False, "test": _short(t.input, 80), "message": "not run (an earlier test failed)"})
            continue
        res: ExecResult = f.result()
        runs.append(res)
        ok = res.status == OK and _normalise(res.stdout) == _normalise(t.output)
        if res.status != OK:
            msg = f"{res.status}: {res.reason}\n{_tail(res.stderr)}".strip()
        else:
            msg = "" if ok else f"expected output {_short(t.output)}, got {_short(res.stdout)}"
        failed |= not ok
        outcomes.append({"passed": ok, "test": _short(t.input, 80), "message": msg})
    return outcomes, runs


def run_tests(source: str, tests: Any, entry_point: Any = None, limits: Optional[Limits] = None,
              pool: Optional[SandboxPool] = None, stop_early: bool = False, strict: Optional[bool] = None) -> TestReport:
    """Run ``source`` against ``tests`` (any shape :func:`parse_tests` reads, or its result) and judge it.

    ``stop_early`` skips the remaining stdio tests after the first failure (for all-pass rewards);
    ``strict`` overrides the tests' own choice of type-strict comparison.
    Raises ``ValueError`` only for tests it cannot read, and :class:`SandboxUnavailable` when no
    isolation is available; a misbehaving program just fails tests.
    """
    if isinstance(tests, list) and tests and isinstance(tests[0], (StdioTest, CallTest, AssertTests)):
        cases, skipped = tests, sum(t.skipped for t in tests if isinstance(t, AssertTests))
    else:
        cases, skipped = parse_tests(tests, entry_point, strict)
    limits = limits or Limits()
    pool = pool or default_pool()
    if not cases:
        return TestReport(0, 0, [], "no runnable tests", [], skipped)
    judge_runs, infra = [], ""
    if isinstance(cases[0], StdioTest):
        outcomes, runs = _judge_stdio(source, cases, limits, pool, stop_early)
    elif isinstance(cases[0], CallTest):
        outcomes, runs = judge_calls(source, cases, limits, pool)
    else:
        outcomes, runs, judge_runs, infra = judge_asserts(source, cases[0], limits, pool)
    passed = sum(o["passed"] for o in outcomes)
    return TestReport(passed, len(outcomes), outcomes, feedback_text(outcomes, runs), runs, skipped, judge_runs, infra)


def feedback_text(outcomes: list, runs: list, max_failures: int = 3) -> str:
    """Execution feedback for multi-turn envs: the count passed and the first failures."""
    passed = sum(o["passed"] for o in outcomes)
    lines = [f"Passed {passed}/{len(outcomes)} tests."]
    for o in [o for o in outcomes if not o["passed"]][:max_failures]:
        lines.append(f"Failed: {o['test']}\n  {o['message']}".rstrip())
    if passed < len(outcomes) and runs and runs[-1].stderr.strip() and not any(o["message"] for o in outcomes):
        lines.append(_tail(runs[-1].stderr))
    return "\n".join(lines)

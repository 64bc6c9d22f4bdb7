"""The ``code`` verifier: the last python code fence of a completion, run against the task's tests.

``task.answer`` holds the tests in any shape :func:`verifiers.code.parse_tests` reads;
``task.info`` may give ``entry_point`` (HumanEval's ``candidate``), ``code_prefix`` (imports or a
signature prepended to the solution) and ``strict_types`` (type-strict comparison). The reward is
all-pass (default) or the fraction passed; ``details["feedback"]`` is execution feedback text a
multi-turn env can send back to the model. Without an isolating sandbox it refuses (see
:meth:`CodeVerifier.preflight`).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from typing import Any, Optional

from ..base import CORRECT, INCORRECT, PARTIAL, VerifyResult, completion_text
from .pool import SandboxPool, default_pool
from .sandbox import Limits, require_isolation
from .tests_runner import run_tests


def extract_code(text: str) -> Optional[str]:
    """The last ```python fence (or, failing that, the last fence of any language)."""
    from rlenv.parsers import parse_code_block

    code = parse_code_block(text, "python")
    return code if code is not None else parse_code_block(text, None)

class CodeVerifier:
    """Score code completions by running them in the sandbox against ``task.answer``'s tests.

    Args:
        mode: ``"all"`` (1.0 only when every test passes) or ``"fraction"`` (share passed).
        timeout: wall seconds per run (a stdio test, or all function tests together).
        memory_mb: memory limit per run.
        limits: full :class:`verifiers.code.Limits` (overrides ``timeout`` and ``memory_mb``).
        pool: the :class:`SandboxPool` to run in (default: the process-wide pool).
        allow_weak_sandbox: accept the weak rlimits tier where bubblewrap does not work — only
            together with ``RLENV_ALLOW_WEAK_SANDBOX=1``; each result then says
            ``details["weak_sandbox"] = True`` and the first run logs a warning.
        strict_types: force type-strict (True) or the format's default comparison (False) for every
            task; None (default) lets each task choose (``info["strict_types"]`` or the answer's
            ``"strict_types"``).

    Example::

        v = CodeVerifier(mode="fraction")
        task = rlenv.Task("Write add(a, b).", answer=["assert add(1, 2) == 3"])
        v.score("```python\\ndef add(a, b):\\n    return a + b\\n```", task).reward  # 1.0
    """

    name = "code"

    def __init__(self, mode: str = "all", timeout: float = 10.0, memory_mb: int = 512,
                 limits: Optional[Limits] = None, pool: Optional[SandboxPool] = None,
                 allow_weak_sandbox: bool = False, strict_types: Optional[bool] = None):
        if mode not in ("all", "fraction"):
            raise ValueError(f"CodeVerifier: mode must be 'all' or 'fraction', got {mode!r}")
        self.mode = mode
        self.limits = limits or Limits(timeout=timeout, memory_mb=memory_mb)
        if allow_weak_sandbox and not self.limits.allow_weak_sandbox:
            self.limits = dataclasses.replace(self.limits, allow_weak_sandbox=True)
        self.strict_types = strict_types
        self._pool = pool

    def preflight(self) -> str:
        """Check, before a run's first step, that code can run isolated here; returns the tier.

        Raises :class:`verifiers.code.SandboxUnavailable` (a :class:`verifiers.base.PreflightError`)
        with one message naming the fix when bubblewrap does not work and the weak tier was not
        explicitly allowed; logs a warning when the weak tier is used.
        """
        return require_isolation(self.limits.allow_weak_sandbox)

    def score(self, completion: Any, task: Any) -> VerifyResult:
        """Extract the code, run the tests, and return the reward with feedback in ``details``."""
        tier = require_isolation(self.limits.allow_weak_sandbox)  # refuses before anything runs
        code = extract_code(completion_text(completion))
        if code is None:
            return VerifyResult(0.0, INCORRECT, {"error": "no code block",
                                                 "feedback": "No ```python code block found in the answer."})
        info = getattr(task, "info", None) or {}
        source = str(info.get("code_prefix", "")) + ("\n" if info.get("code_prefix") else "") + code
        strict = self.strict_types if self.strict_types is not None else info.get("strict_types")
        try:
            report = run_tests(source, getattr(task, "answer", None), info.get("entry_point"), self.limits,
                               self._pool or default_pool(), stop_early=(self.mode == "all"), strict=strict)
        except ValueError as e:
            return VerifyResult.failure(f"task {getattr(task, 'id', None)!r}: {e}")
        broken = [r for r in report.runs + report.judge_runs if r.sandbox_error]
        if broken:
            return VerifyResult.failure(broken[0].reason)
        if report.infra_error:
            return VerifyResult.failure(f"task {getattr(task, 'id', None)!r}: {report.infra_error}")
        if report.total == 0:
            return VerifyResult.failure(f"task {getattr(task, 'id', None)!r} has no runnable tests "
                                        f"({report.skipped} asserts of a constant, which test nothing)")
        reward = report.reward(self.mode)
        verdict = CORRECT if report.passed == report.total else PARTIAL if reward > 0 else INCORRECT
        details = {"passed": report.passed, "total": report.total, "skipped": report.skipped,
                   "feedback": report.feedback, "statuses": [r.status for r in report.runs],
                   "tier": tier, "weak_sandbox": tier != "bwrap"}
        return VerifyResult(reward, verdict, details)

    def score_batch(self, completions: list, tasks: list) -> list:
        """Score many completions concurrently (the sandbox pool bounds the processes)."""
        if len(completions) != len(tasks):
            raise ValueError(f"CodeVerifier.score_batch: {len(completions)} completions but {len(tasks)} tasks")
        with cf.ThreadPoolExecutor(max(1, min(32, len(completions)))) as ex:
            return list(ex.map(self.score, completions, tasks))

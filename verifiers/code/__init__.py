"""Sandboxed execution of untrusted Python and the ``code`` verifier built on it.

* :func:`run_python` — run one program in a fresh locked-down process, get an :class:`ExecResult`.
* :class:`SandboxPool` — run many at once with bounded concurrency.
* :func:`run_tests` — judge a program against stdin/stdout pairs, APPS call tests or assert-style
  tests (MBPP, HumanEval); the verdict never depends on the program's own code.
* :func:`require_isolation` — the preflight check: the tier untrusted code would run in here, or
  one :class:`SandboxUnavailable` error naming the fix (the sandbox fails closed).
* :class:`CodeVerifier` — the env-facing verifier (registered as ``"code"``): last python code
  fence → tests → reward, with execution feedback in ``details["feedback"]``.

See docs/sandbox.md for the threat model and the tiers.
"""

from .pool import SandboxPool, default_concurrency, default_pool
from ._asserts import AssertTests, parse_asserts
from ._calls import CallTest
from ._codec import json_equal, strict_equal
from .sandbox import (ERROR, KILLED, MEMORY, OK, TIMEOUT, ExecResult, Limits, SandboxUnavailable, find_python,
                      require_isolation, run_argv, run_python, sandbox_tier)
from .tests_runner import StdioTest, TestReport, feedback_text, parse_tests, run_tests
from .verifier import CodeVerifier, extract_code
from ..registry import register as _register

_register("code", CodeVerifier, overwrite=True)

__all__ = ["ExecResult", "Limits", "SandboxUnavailable", "find_python", "require_isolation",
           "run_argv", "run_python", "sandbox_tier", "SandboxPool", "default_concurrency", "default_pool",
           "AssertTests", "CallTest", "StdioTest", "TestReport", "feedback_text", "parse_asserts", "parse_tests",
           "run_tests", "json_equal", "strict_equal", "CodeVerifier", "extract_code",
           "OK", "ERROR", "TIMEOUT", "MEMORY", "KILLED"]

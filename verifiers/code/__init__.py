"""Sandboxed execution of untrusted Python and the ``code`` verifier built on it.

* :func:`run_python` — run one program in a fresh locked-down process, get an :class:`ExecResult`.
* :class:`SandboxPool` — run many at once with bounded concurrency.
* :func:`run_tests` — judge a program against stdin/stdout pairs or function-call tests; the
  verdict is made in this (trusted) process on plain data.
* :class:`CodeVerifier` — the env-facing verifier (registered as ``"code"``): last python code
  fence → tests → reward, with execution feedback in ``details["feedback"]``.

See docs/sandbox.md for the threat model and the tiers.
"""

from .pool import SandboxPool, default_concurrency, default_pool
from .sandbox import (ERROR, KILLED, MEMORY, OK, TIMEOUT, ExecResult, Limits, SandboxWarning, find_python,
                      run_argv, run_python, sandbox_tier)
from .tests_runner import CallTest, StdioTest, TestReport, feedback_text, parse_tests, run_tests
from .verifier import CodeVerifier, extract_code
from ..registry import register as _register

_register("code", CodeVerifier, overwrite=True)

__all__ = ["ExecResult", "Limits", "SandboxWarning", "find_python", "run_argv", "run_python", "sandbox_tier",
           "SandboxPool", "default_concurrency", "default_pool", "CallTest", "StdioTest", "TestReport",
           "feedback_text", "parse_tests", "run_tests", "CodeVerifier", "extract_code",
           "OK", "ERROR", "TIMEOUT", "MEMORY", "KILLED"]

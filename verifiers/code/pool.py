"""A concurrency-bounded pool of sandboxed runs: many programs at once, at most N processes trees.

Each run is still its own fresh sandbox (:func:`verifiers.code.sandbox.run_argv`); the pool only
bounds how many exist at the same time, so a batch of memory bombs cannot take the host's memory
(N × ``memory_mb`` at most, 2N × for assert-style tests, whose slot holds a solution and its judge)
and the CPUs are shared fairly.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from typing import Callable, Iterable, Optional, Sequence

from .sandbox import ExecResult, Limits, run_argv, run_python


def default_concurrency() -> int:
    """Twice the usable CPUs (runs spend part of their life starting up and waiting), at least 2."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(2, 2 * n)


class SandboxPool:
    """Run sandboxed programs concurrently, at most ``max_workers`` at a time.

    Example::

        with SandboxPool(4) as pool:
            results = pool.map(["print(1)", "print(2)"])
    """

    def __init__(self, max_workers: Optional[int] = None):
        self.max_workers = int(max_workers or default_concurrency())
        if self.max_workers < 1:
            raise ValueError(f"SandboxPool: max_workers must be at least 1, got {max_workers!r}")
        self._ex = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="sandbox")

    def submit(self, source: str, stdin: str | bytes = "", limits: Optional[Limits] = None) -> "cf.Future[ExecResult]":
        """Queue one program; the future resolves to its :class:`ExecResult`."""
        return self._ex.submit(run_python, source, stdin, limits=limits)

    def submit_argv(self, argv: Sequence[str], stdin: str | bytes = "", limits: Optional[Limits] = None,
                    channel: bool = False) -> "cf.Future[ExecResult]":
        """Queue a lower-level run (see :func:`verifiers.code.sandbox.run_argv`)."""
        return self._ex.submit(run_argv, list(argv), stdin, limits, channel)

    def submit_call(self, fn: Callable, *args) -> cf.Future:
        """Queue ``fn(*args)`` on one of the pool's slots (a run that starts linked sandboxes itself,
        such as a solution and its judge: the pair holds one slot, so it can never wait on itself)."""
        return self._ex.submit(fn, *args)

    def map(self, sources: Iterable[str], stdins: Optional[Iterable[str]] = None,
            limits: Optional[Limits] = None) -> list[ExecResult]:
        """Run every program (with the matching stdin) and return the results in order."""
        sources = list(sources)
        stdins = list(stdins) if stdins is not None else [""] * len(sources)
        if len(stdins) != len(sources):
            raise ValueError(f"SandboxPool.map: {len(sources)} sources but {len(stdins)} stdins; pass one stdin per source")
        futs = [self.submit(s, i, limits) for s, i in zip(sources, stdins)]
        return [f.result() for f in futs]

    def close(self) -> None:
        """Wait for queued runs and stop the worker threads."""
        self._ex.shutdown(wait=True, cancel_futures=False)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: Optional[SandboxPool] = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool the code verifier uses (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SandboxPool()
        return _default

"""Fault isolation: every verifier call runs under a hard time limit, and a crash or a hang costs one
sample's reward, never the run.

Two runners, one contract:

* :class:`ThreadRunner` (the default, for cheap pure-Python verifiers): a pool of daemon threads.
  The caller waits with a deadline; a call that overruns is *abandoned* — marked failed, its thread
  written off and replaced — so one ``time.sleep(1e9)`` never blocks a batch, and works from any
  thread (``signal.alarm`` only works in the main thread, math-verify's known failure).
* :class:`~verifiers.workers.WorkerPool` (for verifiers that declare ``heavy = True`` or a component with
  ``isolation="process"``): persistent worker processes; a call that overruns gets its worker
  killed (SIGKILL) and replaced, which also stops CPU-bound loops that a thread could never stop.

An exception or a timeout becomes ``VerifyResult(0.0, "failed")`` — an infrastructure failure the
trainers mask out of the loss, distinct from a real 0. Each failure is counted in a
:class:`FailureCounter` (read it into metrics) and each *distinct* failure is logged once.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Optional, Sequence

from .base import VerifyResult
from .workers import VerifierTimeout, WorkerPool, pickled

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_BATCH_CALL_TIMEOUT", "FailureCounter", "FAILURES", "Call", "ThreadRunner",
           "WorkerPool",
           "VerifierTimeout", "call_verifier", "run_calls", "failure_result", "thread_runner",
           "process_runner", "in_process", "outcome"]

log = logging.getLogger("verifiers")

#: seconds one verifier call may take unless the component or the verifier says otherwise
DEFAULT_TIMEOUT = 30.0
#: seconds one ``score_batch``/``score_group`` call may take (it covers many samples)
DEFAULT_BATCH_CALL_TIMEOUT = 600.0


# ---------------------------------------------------------------------------------------------
# failure accounting


class FailureCounter:
    """Thread-safe counts of failed verifier calls, by verifier name and kind (timeout/exception).

    Trainers read :meth:`metrics` into their logs; a rising count means a verifier is broken, not
    that the model got worse.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()

    def record(self, name: str, kind: str, n: int = 1) -> None:
        """Count ``n`` failures of verifier ``name`` of ``kind`` (``timeout`` or ``exception``)."""
        with self._lock:
            self._counts[(name, kind)] += n

    @property
    def total(self) -> int:
        """All failures recorded so far."""
        with self._lock:
            return sum(self._counts.values())

    def counts(self) -> dict:
        """``{(name, kind): count}``."""
        with self._lock:
            return dict(self._counts)

    def metrics(self, prefix: str = "verifier_failures/") -> dict:
        """Flat ``{prefix + name: count, prefix + "total": n}`` for a metrics logger."""
        out: dict = collections.defaultdict(int)
        with self._lock:
            for (name, _kind), n in self._counts.items():
                out[prefix + name] += n
            out[prefix + "total"] = sum(self._counts.values())
        return dict(out)

    def reset(self) -> None:
        """Forget all counts (e.g. at the start of a logging interval)."""
        with self._lock:
            self._counts.clear()


#: process-wide counter; every failure lands here as well as in the caller's own counter
FAILURES = FailureCounter()
_logged: set = set()
_logged_lock = threading.Lock()


def failure_result(name: str, kind: str, error: str, counter: Optional[FailureCounter] = None,
                   n: int = 1) -> VerifyResult:
    """Record a failure (counted ``n`` times, logged once per distinct error) and return the
    ``failed`` result that stands in for the verifier's answer."""
    FAILURES.record(name, kind, n)
    if counter is not None and counter is not FAILURES:
        counter.record(name, kind, n)
    key = (name, kind, error[:200])
    with _logged_lock:
        first = key not in _logged
        if first:
            _logged.add(key)
    if first:
        hint = (" — raise its `timeout`, or mark it `heavy = True` so it runs in a killable worker "
                "process" if kind == "timeout" else "")
        log.warning("verifier %r failed (%s): %s%s. The sample is marked failed and masked out of "
                    "the loss; further identical failures are counted, not logged.", name, kind, error, hint)
    return VerifyResult(0.0, "failed", {"error": error, "failure": kind, "verifier": name})


# ---------------------------------------------------------------------------------------------
# one call


_QUEUED, _RUNNING, _DONE, _ABANDONED = 0, 1, 2, 3


class Call:
    """One unit of work: ``fn(*args)`` under ``timeout`` seconds (``None``: no per-call limit).

    After :func:`run_calls`, ``ok`` tells whether it returned; ``value`` holds the return value,
    or ``error``/``kind`` say why not.
    """

    __slots__ = ("fn", "args", "timeout", "state", "started", "ok", "value", "error", "kind",
                 "batch", "future", "chunk")

    def __init__(self, fn: Callable, args: tuple = (), timeout: Optional[float] = DEFAULT_TIMEOUT):
        self.fn, self.args, self.timeout = fn, args, timeout
        self.state, self.started = _QUEUED, 0.0
        self.ok, self.value, self.error, self.kind = False, None, "", ""
        self.batch = None
        self.chunk = None  # (chunk, index) while running, so a hang can re-queue the rest
        self.future = None  # the asyncio future of an async verifier, cancelled on timeout


class _Batch:
    __slots__ = ("remaining", "done")

    def __init__(self, n: int):
        self.remaining = n
        self.done = threading.Event()
        if n == 0:
            self.done.set()


# ---------------------------------------------------------------------------------------------
# async verifiers: one background event loop, shared


class _LoopThread:
    """A background asyncio loop; coroutines returned by verifiers are awaited here so async
    clients (HTTP sessions, semaphores) can live across calls."""

    def __init__(self):
        self._lock = threading.Lock()
        self.loop = None  # an asyncio event loop, created on first use

    def get(self):
        import asyncio

        with self._lock:
            if self.loop is None or self.loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="verifiers-async", daemon=True).start()
                self.loop = loop
            return self.loop


_LOOP = _LoopThread()


def _await(call: Call, value: Any) -> Any:
    import asyncio

    fut = asyncio.run_coroutine_threadsafe(_as_coro(value), _LOOP.get())
    call.future = fut
    return fut.result()


async def _as_coro(aw):
    return await aw


# ---------------------------------------------------------------------------------------------
# the thread runner


class ThreadRunner:
    """A pool of daemon worker threads that run :class:`Call` s with per-call deadlines.

    A call that overruns its timeout is abandoned: it is marked failed and its thread replaced, so
    the pool keeps its size. The stuck thread is a daemon and never blocks interpreter exit.
    """

    def __init__(self, workers: Optional[int] = None):
        self.size = workers or min(32, (os.cpu_count() or 1) + 4)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0
        self.abandoned = 0  # threads written off because their call hung (ever)
        self.stuck = 0  # of those, the ones still running their call now
        self._warned_stuck = False

    def _spawn(self) -> None:
        # caller holds self._lock
        while self._live < self.size:
            self._live += 1
            threading.Thread(target=self._work, name="verifiers-worker", daemon=True).start()

    def _work(self) -> None:
        q, lock = self._q, self._lock
        while True:
            chunk = q.get()  # a list of calls run one after another: one queue hop per chunk
            for k, call in enumerate(chunk):
                with lock:
                    if call.state != _QUEUED:  # abandoned by a batch deadline before it started
                        continue
                    call.state, call.started, call.chunk = _RUNNING, time.monotonic(), (chunk, k)
                try:
                    value = call.fn(*call.args)
                    if inspect.isawaitable(value):
                        value = _await(call, value)
                    ok, err = True, None
                except BaseException as e:  # noqa: BLE001 - any error costs one sample, not the worker
                    ok, value, err = False, None, e
                with lock:
                    if call.state != _RUNNING:  # timed out meanwhile: this thread was replaced, retire
                        self.stuck -= 1
                        return
                    call.ok, call.value, call.chunk = ok, value, None
                    if err is not None:
                        call.kind, call.error = "exception", f"{type(err).__name__}: {err}"
                    call.state = _DONE
                    b = call.batch
                    b.remaining -= 1
                    if b.remaining == 0:
                        b.done.set()

    def run(self, calls: Sequence[Call], deadline: Optional[float] = None) -> None:
        """Run ``calls`` and return when each has finished or failed. ``deadline`` (seconds from
        now) bounds the whole batch: calls still queued or running then are marked failed."""
        if not calls:
            return
        batch = _Batch(len(calls))
        with self._lock:
            self._spawn()
        for c in calls:
            c.batch = batch
        # chunks amortise the queue hop over several cheap calls while still spreading a batch
        # over every worker; a call that hangs gets the rest of its chunk re-queued
        size = max(1, min(32, len(calls) // (4 * self.size)))
        for i in range(0, len(calls), size):
            self._q.put(list(calls[i:i + size]))
        limits = [c.timeout for c in calls if c.timeout is not None]
        tick = max(0.002, min([0.5] + limits) / 10) if limits else 0.05
        t_end = None if deadline is None else time.monotonic() + deadline
        pending = list(calls)
        while not batch.done.wait(tick):
            now = time.monotonic()
            with self._lock:
                still = []
                for c in pending:
                    if c.state == _DONE:
                        continue
                    late = c.state == _RUNNING and c.timeout is not None and now - c.started > c.timeout
                    if late or (t_end is not None and now > t_end):
                        self._abandon(c, "per-call limit" if late else "batch limit", now)
                    else:
                        still.append(c)
                pending = still
                if batch.remaining == 0:
                    break

    def _abandon(self, c: Call, why: str, now: float) -> None:
        # caller holds self._lock
        if c.state == _RUNNING:
            self._live -= 1  # that thread is stuck; start a replacement
            self.abandoned += 1
            self.stuck += 1
            self._spawn()
            if self.stuck >= 64 and not self._warned_stuck:
                # threads cannot be killed: a verifier that keeps hanging leaks one per call
                self._warned_stuck = True
                log.warning("%d verifier calls are stuck in abandoned threads; mark the verifier that times out "
                            "`heavy = True` (or isolation='process') so its calls run in killable processes",
                            self.stuck)
            if c.future is not None:
                c.future.cancel()
            if c.chunk is not None:
                chunk, k = c.chunk
                rest = [x for x in chunk[k + 1:] if x.state == _QUEUED]
                if rest:
                    self._q.put(rest)
                c.chunk = None
            took = now - c.started
        else:
            took = 0.0
        lim = c.timeout if why == "per-call limit" else None
        c.state, c.ok, c.kind = _ABANDONED, False, "timeout"
        c.error = (f"timed out after {took:.1f}s ({why}{f' {lim:g}s' if lim is not None else ''})"
                   if took else f"not started before the {why}")
        c.batch.remaining -= 1
        if c.batch.remaining == 0:
            c.batch.done.set()


_runners: dict = {}
_runners_lock = threading.Lock()


def thread_runner() -> ThreadRunner:
    """The process-wide :class:`ThreadRunner` (created on first use)."""
    with _runners_lock:
        if "thread" not in _runners:
            _runners["thread"] = ThreadRunner(int(os.environ.get("RLENV_VERIFIER_THREADS", 0)) or None)
        return _runners["thread"]


def process_runner() -> WorkerPool:
    """The process-wide :class:`~verifiers.workers.WorkerPool` of heavy verifiers (created on first use)."""
    with _runners_lock:
        if "process" not in _runners:
            _runners["process"] = WorkerPool(workers=int(os.environ.get("RLENV_VERIFIER_PROCESSES", 0)) or None)
        return _runners["process"]


def in_process(fn: Callable, timeout: Optional[float]) -> Callable:
    """``fn`` wrapped to run in the shared worker pool under ``timeout`` seconds. A
    :class:`Call` of the wrapper needs no thread-level limit of its own (pass ``timeout=None``):
    the process runner enforces the limit and kills the worker."""

    def run(*args):
        return process_runner().call(fn, args, timeout)

    return run


def run_calls(calls: Sequence[Call], deadline: Optional[float] = None) -> None:
    """Run ``calls`` on the shared thread runner (see :meth:`ThreadRunner.run`)."""
    thread_runner().run(calls, deadline)


def call_verifier(fn: Callable, *args, timeout: Optional[float] = DEFAULT_TIMEOUT, name: Optional[str] = None,
                  heavy: bool = False, counter: Optional[FailureCounter] = None) -> VerifyResult:
    """Call one verifier under a hard time limit; never raises, never hangs.

    Returns the normalised :class:`VerifyResult`, or a ``failed`` one when ``fn`` raised, returned
    something that is not a score, or ran past ``timeout`` seconds. ``heavy=True`` runs it in a
    killable worker process (``fn`` must be picklable).
    """
    from .base import verifier_name

    name = name or verifier_name(fn)
    c = Call(in_process(fn, timeout), args, None) if heavy else Call(fn, args, timeout)
    # a heavy call is bounded by its worker's limit; the extra deadline only guards the wait for a worker
    run_calls([c], timeout + 30.0 if heavy and timeout is not None else None)
    return outcome(c, name, counter)


def outcome(c: Call, name: str, counter: Optional[FailureCounter] = None) -> VerifyResult:
    """The :class:`VerifyResult` of a finished call (a failure result when it did not return)."""
    if c.ok:
        r = VerifyResult.from_value(c.value)
        if r.failed:
            return failure_result(name, "exception", r.details.get("error", "failed"), counter)
        return r
    kind = c.kind or "exception"
    if c.error.startswith("VerifierTimeout"):
        kind = "timeout"
    return failure_result(name, kind, c.error or "failed", counter)


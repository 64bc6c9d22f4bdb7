"""Persistent worker processes with a hard per-call time limit.

Parsing and simplifying with sympy can run for minutes (``9**9**9**9``) and ``signal.alarm`` only
works in the main thread of the main interpreter — math-verify's known failure. Here each
comparison runs in a separate, long-lived worker process; the caller waits on a pipe with a
deadline and, when it passes, kills the worker and starts a fresh one. That works from any thread
and any process, and a stuck call costs exactly one answer.

Workers are forked from the calling process (``fork`` start method on Linux) after the comparison
module is imported, so a respawn costs a few milliseconds and the worker never re-imports the
user's ``__main__`` (what ``spawn``/``forkserver`` would do — and fail on scripts without an
``if __name__ == "__main__"`` guard). Forking a threaded process can in rare cases leave a lock
held in the child; such a worker simply times out and is replaced, costing one answer.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from multiprocessing.connection import wait
from typing import Callable, Optional, Sequence

_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    return _CTX


def _serve(conn, func_path: str) -> None:
    """Worker main loop: receive (job_id, args), answer (job_id, result)."""
    import importlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    mod_name, fn_name = func_path.rsplit(":", 1)
    fn = getattr(importlib.import_module(mod_name), fn_name)
    while True:
        try:
            job_id, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            res = fn(*args)
        except BaseException as e:  # noqa: BLE001 - the worker must outlive any answer
            res = ("error", f"{type(e).__name__}: {e}"[:500])
        try:
            conn.send((job_id, res))
        except (OSError, ValueError):
            return


class _Worker:
    def __init__(self, func_path: str):
        ctx = _context()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, func_path), daemon=True)
        self.proc.start()
        child.close()
        self.job = None  # (job_id, deadline)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(1.0)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            self.conn.close()
        except OSError:
            pass


class WorkerPool:
    """``n`` persistent workers that run ``func_path`` (``"module:function"``) on argument tuples.

    :meth:`map` returns one result per argument tuple, or ``on_timeout`` for a call that ran past
    ``timeout`` seconds (its worker is killed and replaced). Thread-safe: calls are serialised by a
    lock; use several pools for parallel callers. After ``os.fork`` the child builds its own workers.
    """

    def __init__(self, func_path: str, n: int = 1):
        self.func_path = func_path
        self.n = max(1, int(n))
        self._workers: list[_Worker] = []
        self._pid = None
        self._lock = threading.Lock()
        self.timeouts = 0
        self.respawns = 0

    def _ensure(self) -> None:
        import importlib

        importlib.import_module(self.func_path.split(":")[0])  # warm the module once, forks inherit it
        if self._pid != os.getpid():  # forked child: the parent's pipes are not ours
            self._workers = []
            self._pid = os.getpid()
        self._workers = [w for w in self._workers if w.proc.is_alive() or w.kill()]
        while len(self._workers) < self.n:
            self._workers.append(_Worker(self.func_path))

    def map(self, jobs: Sequence[tuple], timeout: float, on_timeout=None,
            on_error: Optional[Callable] = None) -> list:
        """Run every job; each gets ``timeout`` seconds of wall time once it reaches a worker."""
        results = [on_timeout] * len(jobs)
        with self._lock:
            self._ensure()
            pending = list(range(len(jobs)))[::-1]
            busy: dict = {}
            idle = list(self._workers)
            while pending or busy:
                while pending and idle:
                    w = idle.pop()
                    j = pending.pop()
                    try:
                        w.conn.send((j, jobs[j]))
                    except (OSError, ValueError):
                        self._replace(w, idle)
                        pending.append(j)
                        continue
                    busy[w.conn] = (w, j, time.monotonic() + timeout)
                now = time.monotonic()
                next_deadline = min(d for _, _, d in busy.values())
                ready = wait(list(busy), timeout=max(0.0, next_deadline - now))
                for conn in ready:
                    w, j, _ = busy.pop(conn)
                    try:
                        got_id, res = conn.recv()
                    except (EOFError, OSError):  # the worker died (e.g. out of memory)
                        self._replace(w, idle)
                        continue
                    if isinstance(res, tuple) and len(res) == 2 and res[0] == "error":
                        res = on_error(res[1]) if on_error else on_timeout
                    results[got_id] = res
                    idle.append(w)
                now = time.monotonic()
                for conn in [c for c, (_, _, d) in busy.items() if d <= now]:
                    w, j, _ = busy.pop(conn)
                    self.timeouts += 1
                    self._replace(w, idle)
        return results

    def _replace(self, w: _Worker, idle: list) -> None:
        w.kill()
        self.respawns += 1
        self._workers = [x for x in self._workers if x is not w]
        nw = _Worker(self.func_path)
        self._workers.append(nw)
        idle.append(nw)

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            for w in self._workers:
                w.kill()
            self._workers = []

"""Killable worker processes: the one pool for verifier code that may run forever.

A thread cannot be stopped; a process can. :class:`WorkerPool` keeps up to ``workers`` long-lived
processes. Each call is sent over a pipe and awaited with a deadline; past it the worker is killed
(SIGKILL) and a fresh one takes its place, so a stuck call costs one answer, from any thread of any
process (``signal.alarm`` only works in the main thread — math-verify's known failure). Two ways in:

- :meth:`WorkerPool.call` — one call, thread-safe (many threads share the pool): the heavy
  verifiers of a rubric (:func:`verifiers.isolation.in_process`);
- :meth:`WorkerPool.map` — many argument tuples over all workers at once: the math verifier's
  comparisons (:mod:`verifiers.math`).

Workers start from a ``forkserver`` (``spawn`` where there is none), never by forking the caller.
Measured by ``benchmarks/worker_pool.py``: forking a parent that has used torch's OpenMP threads
leaves a child that runs torch hung for good, and fork's cost grows with the parent's memory (a
trainer holds gigabytes), while a forkserver child starts from a small single-threaded server in
about the same few milliseconds as a fork of a small process — because the pool's function module
is preloaded into the server (:func:`preload`).

The user's main module is *not* imported into the server (multiprocessing's default would re-run an
unguarded script's top-level code there: a script calling ``is_equivalent`` at top level printed
everything twice, and its nested calls failed to False). Only a function or object defined in the
main module itself is a reason to import it: the worker that receives one imports the script first,
as ``multiprocessing`` would (then the script needs its ``if __name__ == "__main__":`` guard).
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import multiprocessing as mp
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Optional, Sequence, Union

__all__ = ["WorkerPool", "VerifierTimeout", "pickled", "preload"]

#: seconds a new worker may take to come up (the first one also starts the forkserver)
START_TIMEOUT = 120.0


class VerifierTimeout(TimeoutError):
    """A call ran past its time limit (its worker was killed)."""


WORKER_NAME = "verifiers-worker"
#: what the forkserver imports once, so every worker starts with it: this module (its hook below)
#: and the pools' function modules, never ``__main__``
_PRELOAD: list = [__name__]


def _install_no_main_hook() -> None:
    """Make multiprocessing's child set-up skip importing the user's main script in *our* workers
    (named :data:`WORKER_NAME`; every other process keeps the standard behaviour). Imported into the
    forkserver, the hook is inherited by each worker it forks; a worker that receives something
    defined in the main script imports it itself (:func:`_load`)."""
    from multiprocessing import spawn

    if getattr(spawn.prepare, "_rlenv_no_main", False):
        return
    standard = spawn.prepare

    def prepare(data):
        if data.get("name") == WORKER_NAME:
            data = {k: v for k, v in data.items() if k not in ("init_main_from_path", "init_main_from_name")}
        return standard(data)

    prepare._rlenv_no_main = True
    spawn.prepare = prepare


_install_no_main_hook()
_preload_lock = threading.Lock()


def preload(module: Optional[str]) -> None:
    """Have the forkserver import ``module`` once, so workers start with it already imported (a
    respawn then costs a fork, not an import). Takes effect if the forkserver has not started yet.
    The list replaces multiprocessing's default ``["__main__"]`` (see the module docstring)."""
    with _preload_lock:
        if module and module not in _PRELOAD:
            _PRELOAD.append(module)
        if "forkserver" in mp.get_all_start_methods():
            mp.get_context("forkserver").set_forkserver_preload(list(_PRELOAD))


def _main_path(fn: Any) -> Optional[str]:
    """The main script's path when ``fn`` (a function, or an object of a class) is defined in it:
    a worker must import that script before it can unpickle ``fn``."""
    module = getattr(fn, "__module__", None) or getattr(type(fn), "__module__", None)
    if module not in ("__main__", "__mp_main__"):
        return None
    return getattr(sys.modules.get("__main__"), "__file__", None)


def pickled(fn: Callable) -> bytes:
    """``fn`` pickled for a worker process, or a ``TypeError`` that says what to do."""
    try:
        return pickle.dumps(fn)
    except Exception as e:
        raise TypeError(f"verifier {fn!r} cannot be pickled for process isolation ({type(e).__name__}: {e}); "
                        f"define it at module level, or use isolation='thread'") from None


def _resolve(path: str) -> Callable:
    """``"module:function"`` -> the function (imported in the worker)."""
    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _load(fn: Any) -> Callable:
    """A payload -> the callable: a ``"module:function"`` path, pickled bytes, or ``(main script
    path, pickled bytes)`` for something defined in the caller's main script."""
    if isinstance(fn, str):
        return _resolve(fn)
    if isinstance(fn, tuple):
        main_path, fn = fn
        if getattr(sys.modules.get("__main__"), "__file__", None) != main_path:
            from multiprocessing import spawn

            spawn.import_main_path(main_path)  # as multiprocessing's spawn does (the script's guard applies)
    return pickle.loads(fn)


async def _as_coro(aw):
    return await aw


def _serve(conn, warm: Optional[str]) -> None:
    """Worker loop: say "ready", then run ``(token, fn, args)`` calls and answer ("ok"|"err", value).
    ``fn`` is pickled bytes or a ``"module:function"`` path the first time a token is seen, then
    ``None`` (the worker caches it)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    cache: dict = {}
    if warm:
        cache[warm] = _resolve(warm)  # import before "ready": start-up never eats a call's time
    conn.send(("ready", os.getpid()))
    while True:
        try:
            token, fn, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            if token not in cache:
                cache[token] = _load(fn)
            value = cache[token](*args)
            if inspect.isawaitable(value):
                import asyncio

                value = asyncio.run(_as_coro(value))
            msg = ("ok", value)
        except BaseException as e:  # noqa: BLE001 - the worker outlives any verifier error
            msg = ("err", f"{type(e).__name__}: {e}"[:2000])
        try:
            conn.send(msg)
        except Exception as e:  # an unpicklable return value
            conn.send(("err", f"verifier returned an unpicklable value: {type(e).__name__}: {e}"))


class _Worker:
    def __init__(self, ctx, warm: Optional[str], epoch: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, warm), name=WORKER_NAME, daemon=True)
        self.proc.start()
        child.close()
        self.sent: set = set()  # tokens whose function this worker holds
        self.epoch = epoch
        try:
            ok = self.conn.poll(START_TIMEOUT) and self.conn.recv()[0] == "ready"
        except (EOFError, OSError):
            ok = False
        if not ok:
            self.kill()
            raise RuntimeError(f"a verifier worker process did not start (exit code {self.proc.exitcode})")

    def send(self, token: Any, fn: Any, args: tuple) -> None:
        self.conn.send((token, None if token in self.sent else fn, args))
        self.sent.add(token)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(2)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            self.conn.close()
        except OSError:
            pass


class WorkerPool:
    """Up to ``workers`` persistent worker processes with a hard time limit per call.

    Args:
        func: the default function of :meth:`map` — ``"module:function"`` (imported in the worker;
            its module is preloaded into the forkserver) or a picklable callable.
        workers: the most processes alive at once (default: the CPU count).
        start_method: ``"forkserver"`` by default (``"spawn"`` where unavailable); see the module
            docstring for why not ``"fork"``.

    Functions travel pickled (module-level functions by reference, objects by value) once per worker.
    Counters: ``timeouts`` (calls past their limit) and ``killed`` (workers killed: timeouts and
    deaths). After ``os.fork`` the child starts its own workers.
    """

    def __init__(self, func: Union[str, Callable, None] = None, workers: Optional[int] = None, *,
                 start_method: Optional[str] = None):
        if func is not None and not (callable(func) or (isinstance(func, str) and ":" in func)):
            raise TypeError(f"WorkerPool: func must be 'module:function' or a callable, got {func!r}")
        self.func = func
        self.size = max(1, int(workers or os.cpu_count() or 1))
        method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self._warm = func if isinstance(func, str) else None
        if method == "forkserver":  # also replaces multiprocessing's default preload of __main__
            preload(self._warm.partition(":")[0] if self._warm else None)
        self._ctx = mp.get_context(method)
        self._cond = threading.Condition()
        self._idle: list = []
        self._started = 0
        self._epoch = 0
        self._pid = os.getpid()
        self._tokens: dict = {}  # id(fn) or path -> (token, payload, fn kept alive)
        self._next_token = itertools.count(1)
        self.timeouts = 0
        self.killed = 0

    # -- workers ------------------------------------------------------------------------------------
    def _payload(self, fn: Union[str, Callable]) -> tuple:
        key = fn if isinstance(fn, str) else id(fn)
        with self._cond:
            entry = self._tokens.get(key)
            if entry is None or entry[2] is not fn:
                if len(self._tokens) >= 256:  # many throwaway verifiers: forget the old ones
                    self._tokens.clear()
                payload = fn if isinstance(fn, str) else pickled(fn)
                main_path = None if isinstance(fn, str) else _main_path(fn)
                if main_path:
                    payload = (main_path, payload)
                # tokens are never reused (workers cache by them); a path is its own token
                entry = (fn if isinstance(fn, str) else next(self._next_token), payload, fn)
                self._tokens[key] = entry
            return entry[0], entry[1]

    def _acquire(self, block: bool = True) -> Optional[_Worker]:
        """An idle worker, else a new one (up to ``workers``); waits for one when ``block``."""
        with self._cond:
            if self._pid != os.getpid():  # a forked child: the parent's workers are not ours
                self._idle, self._started, self._pid = [], 0, os.getpid()
            while not self._idle and self._started >= self.size:
                if not block:
                    return None
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
            epoch = self._epoch
        try:
            return _Worker(self._ctx, self._warm, epoch)
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, w: _Worker) -> None:
        if w.epoch != self._epoch:  # close() ran while it was busy
            self._discard(w, count=False)
            return
        with self._cond:
            self._idle.append(w)
            self._cond.notify()

    def _discard(self, w: _Worker, count: bool = True, timed_out: bool = False) -> None:
        w.kill()
        with self._cond:
            self._started -= 1
            self.killed += int(count)
            self.timeouts += int(timed_out)
            self._cond.notify()

    # -- calls --------------------------------------------------------------------------------------
    def call(self, fn: Union[str, Callable], args: tuple, timeout: Optional[float]) -> Any:
        """``fn(*args)`` in a worker; raises :class:`VerifierTimeout` past ``timeout`` seconds (the
        worker is killed) and ``RuntimeError`` with the remote error text otherwise."""
        token, payload = self._payload(fn)
        w = self._acquire()
        try:
            w.send(token, payload, args)
            status, value = w.conn.recv() if w.conn.poll(timeout) else ("timeout", None)
        except (EOFError, OSError) as e:
            self._discard(w)
            raise RuntimeError(f"verifier worker process died ({type(e).__name__}); it was replaced") from None
        except BaseException:
            self._discard(w)
            raise
        if status == "timeout":
            self._discard(w, timed_out=True)
            raise VerifierTimeout(f"timed out after {timeout:g}s (worker process killed)")
        self._release(w)
        if status == "err":
            raise RuntimeError(value)
        return value

    def map(self, jobs: Sequence[tuple], timeout: float, on_timeout: Any = None,
            on_error: Optional[Callable[[str], Any]] = None, fn: Union[str, Callable, None] = None) -> list:
        """Run ``fn`` (default: the pool's ``func``) on every argument tuple, spread over the workers;
        each call gets ``timeout`` seconds once it reaches a worker. A call past its limit (its
        worker is killed and replaced) or whose worker died gives ``on_timeout``; one that raised
        gives ``on_error(message)`` (``on_timeout`` when ``on_error`` is None)."""
        fn = fn if fn is not None else self.func
        if fn is None:
            raise ValueError("WorkerPool.map needs fn= or a pool built with func=")
        token, payload = self._payload(fn)
        results = [on_timeout] * len(jobs)
        pending = list(range(len(jobs)))[::-1]
        busy: dict = {}  # conn -> (worker, job index, deadline)
        try:
            while pending or busy:
                while pending:
                    w = self._acquire(block=not busy)
                    if w is None:
                        break
                    j = pending.pop()
                    try:
                        w.send(token, payload, jobs[j])
                    except (OSError, ValueError):  # died while idle: replace it, retry the job
                        self._discard(w)
                        pending.append(j)
                        continue
                    busy[w.conn] = (w, j, time.monotonic() + timeout)
                next_deadline = min(d for _, _, d in busy.values())
                for conn in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                    w, j, _ = busy.pop(conn)
                    try:
                        status, value = conn.recv()
                    except (EOFError, OSError):  # the worker died (e.g. out of memory)
                        self._discard(w)
                        continue
                    results[j] = value if status == "ok" else (on_error(value) if on_error else on_timeout)
                    self._release(w)
                now = time.monotonic()
                for conn in [c for c, (_, _, d) in busy.items() if d <= now]:
                    w, _, _ = busy.pop(conn)
                    self._discard(w, timed_out=True)
        finally:
            for w, _, _ in busy.values():  # interrupted (e.g. KeyboardInterrupt): no half-done worker stays
                self._discard(w, count=False)
        return results

    def close(self) -> None:
        """Kill every idle worker; busy ones are killed when their call returns. The pool stays
        usable (it starts new workers)."""
        with self._cond:
            self._epoch += 1
            idle, self._idle = self._idle, []
        for w in idle:
            self._discard(w, count=False)

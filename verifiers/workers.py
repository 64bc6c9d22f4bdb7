"""Persistent worker processes for verifiers that may loop forever (``heavy = True``).

A thread cannot be stopped; a process can. :class:`ProcessRunner` keeps a few long-lived workers;
each call is sent over a pipe and awaited with a deadline; past it, the worker is killed (SIGKILL)
and a fresh one takes its place. Workers come from ``forkserver`` (``spawn`` where unavailable):
forking a process that already runs torch or tokenizer threads is unsafe.
"""

from __future__ import annotations

import inspect
import itertools
import multiprocessing as mp
import os
import pickle
import queue
import threading
from typing import Any, Callable, Optional

__all__ = ["ProcessRunner", "VerifierTimeout", "pickled"]


class VerifierTimeout(TimeoutError):
    """A verifier call ran past its time limit."""



async def _as_coro(aw):
    return await aw


def _serve(conn) -> None:
    """Worker-process loop: cache verifiers by token, run calls, send back ("ok"|"err", payload)."""
    cache: dict = {}
    while True:
        try:
            token, blob, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            if blob is not None:
                cache[token] = pickle.loads(blob)
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


def pickled(fn: Callable) -> bytes:
    """``fn`` pickled for a worker process, or a ``TypeError`` that says what to do."""
    try:
        return pickle.dumps(fn)
    except Exception as e:
        raise TypeError(f"verifier {fn!r} cannot be pickled for process isolation ({type(e).__name__}: {e}); "
                        f"define it at module level, or use isolation='thread'") from None


class _Proc:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), name="verifiers-proc", daemon=True)
        self.proc.start()
        child.close()
        self.tokens: set = set()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(2)
        except Exception:  # already gone
            pass
        self.conn.close()


class ProcessRunner:
    """Persistent worker processes; :meth:`call` runs one verifier call in one of them and kills
    and replaces the worker when the call overruns. Thread-safe: many threads may call at once
    (at most ``size`` run concurrently; the others wait for a free worker).

    Verifiers are pickled once per worker (functions by reference, objects by value), so a class
    verifier with state pays the transfer once, not per call.
    """

    def __init__(self, workers: Optional[int] = None, start_method: Optional[str] = None):
        self.size = workers or max(1, os.cpu_count() or 1)
        methods = mp.get_all_start_methods()
        # fork is unsafe after torch/tokenizers started threads; forkserver forks a clean process
        self._ctx = mp.get_context(start_method or ("forkserver" if "forkserver" in methods else "spawn"))
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._blobs: dict = {}  # id(verifier) -> (token, pickled bytes, verifier kept alive)
        self._tokens = itertools.count(1)
        self.killed = 0

    def _token(self, fn: Callable) -> tuple[int, bytes]:
        with self._lock:
            entry = self._blobs.get(id(fn))
            if entry is None or entry[2] is not fn:
                blob = pickled(fn)
                if len(self._blobs) >= 256:  # many throwaway verifiers: forget the old ones
                    self._blobs.clear()
                entry = (next(self._tokens), blob, fn)  # tokens are never reused: workers cache by them
                self._blobs[id(fn)] = entry
            return entry[0], entry[1]

    def _acquire(self) -> _Proc:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._started < self.size:
                self._started += 1
                new = True
            else:
                new = False
        if new:
            try:
                return _Proc(self._ctx)
            except BaseException:
                with self._lock:
                    self._started -= 1
                raise
        return self._idle.get()

    def _discard(self, w: _Proc) -> None:
        w.kill()
        with self._lock:
            self._started -= 1
            self.killed += 1

    def call(self, fn: Callable, args: tuple, timeout: Optional[float]) -> Any:
        """``fn(*args)`` in a worker process; raises :class:`VerifierTimeout` past ``timeout``
        seconds (the worker is killed) and ``RuntimeError`` with the remote error text otherwise."""
        token, blob = self._token(fn)
        w = self._acquire()
        try:
            w.conn.send((token, None if token in w.tokens else blob, args))
            w.tokens.add(token)
            if w.conn.poll(timeout):
                status, payload = w.conn.recv()
            else:
                status, payload = "timeout", None
        except (EOFError, OSError) as e:
            self._discard(w)
            raise RuntimeError(f"verifier worker process died ({type(e).__name__}); it was replaced") from None
        except BaseException:
            if w.proc.is_alive() and not w.conn.closed:
                self._discard(w)
            raise
        if status == "timeout":
            self._discard(w)
            raise VerifierTimeout(f"timed out after {timeout:g}s (worker process killed)")
        self._idle.put(w)
        if status == "err":
            raise RuntimeError(payload)
        return payload

    def close(self) -> None:
        """Kill every idle worker (busy ones are killed when their call returns or times out)."""
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return

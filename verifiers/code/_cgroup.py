"""Per-run cgroups (v1 ``pids`` + ``memory``, or the v2 unified tree) when this process may create them.

A cgroup is the one limit that holds for a run's whole process tree: ``pids.max`` bounds a fork bomb
even for root (who is exempt from ``RLIMIT_NPROC``), the memory limit bounds the sum over all of the
run's processes (``RLIMIT_AS`` is per process), and ``cgroup.procs`` lists every survivor to kill.
Where cgroups are not writable (no root, no delegation) :func:`available` is False and the sandbox
falls back to rlimits, a dedicated uid and the PID namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from typing import Optional

_ROOT = "/sys/fs/cgroup"
_counter = itertools.count()
_probe: Optional[dict] = None
_probe_lock = threading.Lock()


def _own_path(controller: str) -> str:
    """This process's path in a controller's hierarchy (children are created under it, so the
    limits of the group we already run in still apply)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if controller in ctrls.split(",") or (controller == "" and ctrls == ""):
                    return path
    except OSError:
        pass
    return "/"


def _writable_base() -> dict:
    """Find the directories new per-run groups go into: {'pids': dir, 'memory': dir} (v1) or
    {'unified': dir} (v2). Empty when none is writable."""
    found: dict = {}
    if os.path.isfile(os.path.join(_ROOT, "cgroup.controllers")):  # pure v2
        base = os.path.join(_ROOT, _own_path("").lstrip("/"), "rlenv-sandbox")
        try:
            os.makedirs(base, exist_ok=True)
            probe = os.path.join(base, f"probe-{os.getpid()}")
            os.mkdir(probe)
            ok = os.path.exists(os.path.join(probe, "pids.max")) and os.path.exists(os.path.join(probe, "memory.max"))
            os.rmdir(probe)
            if ok:
                found["unified"] = base
        except OSError:
            pass
        return found
    for ctrl in ("pids", "memory"):
        base = os.path.join(_ROOT, ctrl, _own_path(ctrl).lstrip("/"), "rlenv-sandbox")
        try:
            os.makedirs(base, exist_ok=True)
            probe = os.path.join(base, f"probe-{os.getpid()}")
            os.mkdir(probe)
            os.rmdir(probe)
            found[ctrl] = base
        except OSError:
            return {}
    return found


def available() -> bool:
    """True when per-run pids and memory cgroups can be created here (probed once)."""
    global _probe
    with _probe_lock:
        if _probe is None:
            _probe = _writable_base() if os.geteuid() == 0 else {}
    return bool(_probe)


class RunGroup:
    """The cgroup(s) of one run: create with limits, join from the child, kill and remove after."""

    def __init__(self, max_pids: int, memory_bytes: int):
        if not available():
            raise RuntimeError("cgroups are not writable here; check verifiers.code._cgroup.available() first")
        name = f"run-{os.getpid()}-{next(_counter)}"
        self.dirs = [os.path.join(base, name) for base in _probe.values()]
        for d in self.dirs:
            os.mkdir(d)
        if "unified" in _probe:
            self._write(self.dirs[0], "pids.max", max_pids)
            self._write(self.dirs[0], "memory.max", memory_bytes)
            self._write(self.dirs[0], "memory.swap.max", 0, missing_ok=True)
        else:
            pids_dir, mem_dir = self.dirs
            self._write(pids_dir, "pids.max", max_pids)
            self._write(mem_dir, "memory.limit_in_bytes", memory_bytes)
            # no swap beyond the limit, so the limit is real memory
            self._write(mem_dir, "memory.memsw.limit_in_bytes", memory_bytes, missing_ok=True)
        # the files the launcher shell writes its pid into (see _launch.chain)
        self.procs_paths = [os.path.join(d, "cgroup.procs") for d in self.dirs]
        self.per_thread = "unified" not in _probe  # v1 lets a single thread change groups

    @contextlib.contextmanager
    def spawning_from_here(self):
        """(cgroup v1) Put the calling thread in the group while it starts the run, so the child is
        born inside it without a launcher shell (one exec less); the thread moves back after."""
        tid = str(threading.get_native_id())
        home = []
        with open("/proc/thread-self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for ctrl in ("pids", "memory"):
                    if ctrl in ctrls.split(","):
                        home.append((ctrl, os.path.join(_ROOT, ctrl, path.lstrip("/"), "tasks")))
        home.sort(key=lambda x: ("pids", "memory").index(x[0]))
        try:
            for d in self.dirs:
                self._write(d, "tasks", tid)
            yield
        finally:
            for _, tasks in home:
                with open(tasks, "w") as f:
                    f.write(tid)

    @staticmethod
    def _write(d: str, fname: str, value, missing_ok: bool = False) -> None:
        try:
            with open(os.path.join(d, fname), "w") as f:
                f.write(str(value))
        except OSError:
            if not missing_ok:
                raise

    def hit_memory_limit(self) -> bool:
        """True when the kernel refused or reclaimed memory at the group's limit (an OOM kill)."""
        name = "memory.events" if "unified" in _probe else "memory.failcnt"
        d = self.dirs[0] if "unified" in _probe else self.dirs[1]
        try:
            with open(os.path.join(d, name)) as f:
                text = f.read()
        except OSError:
            return False
        if "unified" in _probe:
            return any(line.split()[0] in ("oom_kill", "max") and int(line.split()[1]) > 0
                       for line in text.splitlines() if line.strip())
        return int(text.strip() or 0) > 0

    def pids(self) -> list[int]:
        out: list[int] = []
        for p in self.procs_paths:
            try:
                with open(p) as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def destroy(self, timeout: float = 2.0) -> bool:
        """Kill every process still in the group and remove it. Returns False if something survived."""
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids():
                if pid == os.getpid():  # never this process (a thread of ours mid-spawn)
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            left = []
            for d in self.dirs:
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
            self.dirs = left
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)

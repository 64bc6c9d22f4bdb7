"""Per-run cgroups (v1 ``pids`` + ``memory``, or the v2 unified tree) when this process may create them.

A cgroup is the one limit that holds for a run's whole process tree: ``pids.max`` bounds a fork bomb
even for root (who is exempt from ``RLIMIT_NPROC``), the memory limit bounds the sum over all of the
run's processes (``RLIMIT_AS`` is per process), and ``cgroup.procs`` lists every survivor to kill.
Where cgroups are not writable (no root, no delegation) :func:`available` is False and the sandbox
falls back to rlimits, a dedicated uid and the PID namespace.
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
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


def _remove_stale(base: str) -> None:
    """Remove empty groups left by processes of ours that died without cleaning up."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) == 3 and parts[0] in ("run", "slot") and parts[1].isdigit() and int(parts[1]) != os.getpid():
            if not os.path.exists(f"/proc/{parts[1]}"):
                try:
                    os.rmdir(os.path.join(base, name))
                except OSError:
                    pass


def available() -> bool:
    """True when per-run pids and memory cgroups can be created here (probed once)."""
    global _probe
    with _probe_lock:
        if _probe is None:
            _probe = _writable_base() if os.geteuid() == 0 else {}
            for base in _probe.values():
                _remove_stale(base)
    return bool(_probe)


def _write(d: str, fname: str, value, missing_ok: bool = False) -> None:
    try:
        with open(os.path.join(d, fname), "w") as f:
            f.write(str(value))
    except OSError:
        if not missing_ok:
            raise


def _set_limits(dirs: list, max_pids: int, memory_bytes: int) -> None:
    """Write a run's limits into its groups (``dirs`` in ``_probe`` order) and zero the v1 counters."""
    if "unified" in _probe:
        _write(dirs[0], "pids.max", max_pids)
        _write(dirs[0], "memory.max", memory_bytes)
        _write(dirs[0], "memory.swap.max", 0, missing_ok=True)
        return
    pids_dir, mem_dir = dirs
    _write(pids_dir, "pids.max", max_pids)
    # memsw (memory + swap) must stay >= the memory limit: order the two writes accordingly
    cur = _read_int(mem_dir, "memory.limit_in_bytes")
    order = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    for fname in (order if cur is None or memory_bytes < cur else order[::-1]):
        _write(mem_dir, fname, memory_bytes, missing_ok=fname.startswith("memory.memsw"))  # no swap beyond the limit
    _write(mem_dir, "memory.failcnt", 0)
    _write(mem_dir, "memory.memsw.failcnt", 0, missing_ok=True)


def _read_int(d: str, fname: str) -> Optional[int]:
    try:
        with open(os.path.join(d, fname)) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


def _members(procs_paths: list) -> list[int]:
    out: list[int] = []
    for p in procs_paths:
        try:
            with open(p) as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def _kill_members(procs_paths: list) -> bool:
    """SIGKILL every process listed in the groups except this one; True when none was left."""
    me, found = os.getpid(), False
    for pid in _members(procs_paths):
        if pid == me:  # this process has a (launcher) thread in the group: never kill ourselves
            continue
        found = True
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return not found


def _hit_memory_limit(dirs: list) -> bool:
    """True when the kernel refused or reclaimed memory at the group's limit (an OOM kill)."""
    if "unified" in _probe:
        try:
            with open(os.path.join(dirs[0], "memory.events")) as f:
                text = f.read()
        except OSError:
            return False
        return any(line.split()[0] in ("oom_kill", "max") and int(line.split()[1]) > 0
                   for line in text.splitlines() if line.strip())
    return (_read_int(dirs[1], "memory.failcnt") or 0) > 0


class RunGroup:
    """The cgroup(s) of one run (cgroup v2): created with limits, joined by the launcher shell in
    the child (``procs_paths``), killed and removed after."""

    per_thread = False

    def __init__(self, max_pids: int, memory_bytes: int):
        if not available():
            raise RuntimeError("cgroups are not writable here; check verifiers.code._cgroup.available() first")
        name = f"run-{os.getpid()}-{next(_counter)}"
        self.dirs = [os.path.join(base, name) for base in _probe.values()]
        for d in self.dirs:
            os.mkdir(d)
        _set_limits(self.dirs, max_pids, memory_bytes)
        # the files the launcher shell writes its pid into (see _launch.chain)
        self.procs_paths = [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def hit_memory_limit(self) -> bool:
        return _hit_memory_limit(self.dirs)

    def pids(self) -> list[int]:
        return [p for p in _members(self.procs_paths) if p != os.getpid()]

    def destroy(self, timeout: float = 2.0) -> bool:
        """Kill every process still in the group and remove it. Returns False if something survived."""
        deadline = time.monotonic() + timeout
        while True:
            _kill_members(self.procs_paths)
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


class _Slot:
    """A pair of long-lived v1 groups with one launcher thread living in them.

    Moving a task between v1 cgroups takes the kernel's cgroup-wide write lock (an RCU grace
    period, 5-20 ms here, growing with the number of groups): paid once per slot instead of once per
    run. A program spawned by the slot's thread is born inside the groups, so the run needs no
    migration at all; between runs the groups are emptied, their limits rewritten and counters zeroed.
    """

    def __init__(self, index: int):
        name = f"slot-{os.getpid()}-{index}"
        self.dirs = [os.path.join(base, name) for base in _probe.values()]
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
        self.procs_paths = [os.path.join(d, "cgroup.procs") for d in self.dirs]
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        ready: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name=f"rlenv-sandbox-{name}", daemon=True)
        self._thread.start()
        err = ready.get()
        if err is not None:
            self.close()
            raise err

    def _serve(self, ready: queue.SimpleQueue) -> None:
        try:
            tid = str(threading.get_native_id())
            for d in self.dirs:
                _write(d, "tasks", tid)  # v1 lets a single thread change groups
        except OSError as e:
            ready.put(e)
            return
        ready.put(None)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box.append((True, fn()))
            except BaseException as e:  # handed back to the caller's thread
                box.append((False, e))
            done.set()

    def call(self, fn):
        """Run ``fn()`` on this slot's thread (so the processes it starts are born in the groups)."""
        box: list = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def clear(self, timeout: float) -> bool:
        """Kill what is left of the last run and wait until only our thread remains."""
        deadline = time.monotonic() + timeout
        while not _kill_members(self.procs_paths):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        """Stop the thread (it leaves the groups as it exits) and remove the groups."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout=2)
        for d in self.dirs:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the exiting thread may still be listed for a moment
                    time.sleep(0.01)


_slots_lock = threading.Lock()
_free_slots: list = []
_all_slots: list = []


class SlotGroup:
    """The cgroups of one run (cgroup v1): a resident :class:`_Slot` taken from a free list.

    ``spawn(fn)`` runs the ``Popen`` call on the slot's thread; ``destroy`` kills every survivor and
    gives the slot back (a slot whose processes will not die is retired, never reused).
    """

    per_thread = True
    procs_paths: list = []  # nothing for a launcher shell to join: the child is born inside

    def __init__(self, max_pids: int, memory_bytes: int):
        if not available():
            raise RuntimeError("cgroups are not writable here; check verifiers.code._cgroup.available() first")
        with _slots_lock:
            slot = _free_slots.pop() if _free_slots else None
        if slot is None:
            slot = _Slot(next(_counter))
            with _slots_lock:
                _all_slots.append(slot)
        if not slot.clear(timeout=2.0):  # retired: never handed out again
            raise RuntimeError("a previous run's processes survive in the sandbox's cgroup")
        try:
            _set_limits(slot.dirs, max_pids, memory_bytes)
        except BaseException:
            with _slots_lock:
                _free_slots.append(slot)
            raise
        self.slot, self.dirs = slot, slot.dirs

    def spawn(self, fn):
        return self.slot.call(fn)

    def hit_memory_limit(self) -> bool:
        return _hit_memory_limit(self.dirs)

    def pids(self) -> list[int]:
        return [p for p in _members(self.slot.procs_paths) if p != os.getpid()] if self.slot else []

    def destroy(self, timeout: float = 2.0) -> bool:
        """Kill every process still in the groups and return the slot. False if something survived."""
        slot, self.slot = self.slot, None
        if slot is None:
            return True
        ok = slot.clear(timeout)
        if ok:
            with _slots_lock:
                _free_slots.append(slot)
        return ok


def new_group(max_pids: int, memory_bytes: int):
    """The cgroups for one run: resident slots on v1, a fresh group per run on v2."""
    return RunGroup(max_pids, memory_bytes) if "unified" in _probe else SlotGroup(max_pids, memory_bytes)


def _close_slots() -> None:
    with _slots_lock:
        slots = [s for s in _all_slots if s]
        _all_slots.clear()
        _free_slots.clear()
    for s in slots:
        s.clear(timeout=1.0)
        s.close()


def _forget_slots_in_child() -> None:
    """A forked child has none of the slot threads: it starts its own slots (new names) if it runs code."""
    global _all_slots, _free_slots, _slots_lock
    _slots_lock = threading.Lock()
    _all_slots, _free_slots = [], []


atexit.register(_close_slots)
os.register_at_fork(after_in_child=_forget_slots_in_child)

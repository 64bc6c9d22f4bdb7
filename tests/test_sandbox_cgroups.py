"""The resident cgroup slots (cgroup v1, as root): reused across runs, limits rewritten per run,
counters zeroed, survivors killed. Skipped where this process cannot create cgroups."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys

import pytest

from verifiers.code import Limits, run_python
from verifiers.code import _cgroup

pytestmark = pytest.mark.skipif(not _cgroup.available() or "unified" in (_cgroup._probe or {}),
                                reason="needs writable cgroup v1 pids+memory controllers (root)")


def _slots() -> list:
    return [s for s in _cgroup._all_slots if s]


def test_sequential_runs_reuse_one_slot():
    before = len(_slots())
    for i in range(10):
        assert run_python(f"print({i})").stdout.strip() == str(i)
    assert len(_slots()) <= max(before, 1)
    for s in _slots():  # between runs a slot holds nothing but our launcher thread
        assert [p for p in _cgroup._members(s.procs_paths) if p != os.getpid()] == []


def test_concurrent_runs_get_a_slot_each_and_no_more():
    before = len(_slots())  # earlier tests in this process may have made some (a judged run uses two)
    with cf.ThreadPoolExecutor(4) as ex:
        out = list(ex.map(lambda i: run_python(f"import time; time.sleep(0.2); print({i})"), range(12)))
    assert [r.stdout.strip() for r in out] == [str(i) for i in range(12)]
    assert len(_slots()) <= max(before, 4 + 1)  # free slots are reused; + the slot the sequential test may have made


def test_limits_are_per_run_on_a_reused_slot():
    hog = "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); print('ok')"
    small = run_python(hog, memory_mb=128)
    assert small.status == "memory", small
    big = run_python(hog, memory_mb=1024)  # same slot, larger limit, counters zeroed
    assert big.status == "ok" and big.stdout.strip() == "ok", big
    bomb = "import os\nfor _ in range(40):\n    if os.fork() == 0:\n        import time; time.sleep(5); os._exit(0)\nprint('forked')"
    few = run_python(bomb, limits=Limits(max_processes=4, timeout=10))
    assert few.status != "ok"
    many = run_python(bomb, limits=Limits(max_processes=64, timeout=10))
    assert many.stdout.strip() == "forked", many


def test_a_forked_child_builds_its_own_slots():
    code = ("import os, sys; sys.path.insert(0, %r)\n"
            "from verifiers.code import run_python\n"
            "assert run_python('print(1)').stdout.strip() == '1'\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    r = run_python('print(2)'); os._exit(0 if r.stdout.strip() == '2' else 3)\n"
            "_, status = os.waitpid(pid, 0); print(os.waitstatus_to_exitcode(status))") % os.getcwd()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().endswith("0"), p.stderr[-2000:]

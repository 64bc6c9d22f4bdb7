"""Sandbox under load: 200 runs at once through the pool, a quarter of them hostile."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import pytest
from sandbox_helpers import mem_available_mb, processes_with, pss_mb, require_bwrap

from verifiers.code import Limits, SandboxPool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LIMITS = Limits(timeout=3.0, memory_mb=256, max_processes=16, max_file_mb=8)

MEMORY_BOMB = "x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))"
FORK_BOMB = """
import os, time
n = 0
try:
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError:
    print("stopped", n)
"""
LOOP = "while True:\n    pass"


def honest(i: int, port: int, canary: str) -> str:
    """A normal program that also tries the network and a write outside its scratch dir."""
    return f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=0.5)
    print("CONNECTED")
except OSError:
    pass
try:
    open({canary!r}, "w").write("x")
    print("WROTE")
except OSError:
    pass
open("mine.txt", "w").write(str({i} * {i}))
print(open("mine.txt").read())
"""


def test_200_runs_at_once_a_quarter_hostile(tmp_path):
    require_bwrap()
    marker = secrets.token_hex(8)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    kinds, sources = [], []
    for i in range(200):
        kind = ("memory", "fork", "loop")[i // 4 % 3] if i % 4 == 0 else "honest"
        body = {"memory": MEMORY_BOMB, "fork": FORK_BOMB, "loop": LOOP}.get(kind) or honest(i, port, str(tmp_path / f"canary{i}"))
        kinds.append((kind, i))
        sources.append(f"MARKER = {marker!r}\n{body}")

    baseline = mem_available_mb()
    low, peak, stop = [baseline], [0.0], threading.Event()

    def watch():
        while not stop.is_set():
            low[0] = min(low[0], mem_available_mb())
            peak[0] = max(peak[0], pss_mb(processes_with(marker)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.monotonic()
    with SandboxPool() as pool:  # default: 2 × CPUs at once
        workers = pool.max_workers
        futures = [pool.submit(s, "", LIMITS) for s in sources]
        results = [f.result() for f in futures]
    elapsed = time.monotonic() - t0
    stop.set()
    watcher.join()

    expected = {"memory": {"memory"}, "fork": {"ok"}, "loop": {"timeout"}, "honest": {"ok"}}
    for (kind, i), r in zip(kinds, results):
        assert r.status in expected[kind], (kind, i, r)
        assert r.wall_time <= LIMITS.timeout + 1.5, (kind, i, r.wall_time)
        if kind == "honest":
            assert r.stdout.strip() == str(i * i), (i, r)
        if kind == "fork":
            assert int(r.stdout.split()[-1]) <= LIMITS.max_processes
    # the host kept its memory: the sandboxes together never held more than the concurrent runs'
    # limits, and the host's available memory (other processes share this machine) stayed far up
    assert peak[0] <= workers * (LIMITS.memory_mb + LIMITS.max_file_mb + 64), peak[0]
    assert baseline - low[0] < workers * (LIMITS.memory_mb + LIMITS.max_file_mb + 64) + 2048, (baseline, low[0])
    time.sleep(0.2)
    assert processes_with(marker) == []
    try:
        srv.accept()
        reached = True
    except BlockingIOError:
        reached = False
    srv.close()
    assert not reached
    assert not any(p.name.startswith("canary") for p in tmp_path.iterdir())
    assert elapsed < 90, elapsed
    print(f"200 runs in {elapsed:.1f} s with {workers} workers; sandboxes' peak PSS {peak[0]:.0f} MiB; "
          f"host MemAvailable dipped {baseline - low[0]} MiB")

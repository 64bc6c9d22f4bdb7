"""Shared checks for the sandbox tests: is the real sandbox here, which processes survive, host memory."""

from __future__ import annotations

import os

import pytest

from verifiers.code import sandbox_tier
from verifiers.code._launch import why_not_bwrap


def require_bwrap() -> None:
    """Skip (with the reason) when bubblewrap cannot run here; CI installs it via .ci/install-sandbox.sh."""
    if sandbox_tier() != "bwrap":
        pytest.skip(f"the real sandbox cannot run here ({why_not_bwrap() or 'RLENV_SANDBOX_TIER forces rlimits'}); "
                    "run .ci/install-sandbox.sh as root")


def processes_with(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z":
            found.append(int(d))
    return found


def pss_mb(pids: list[int]) -> float:
    """Proportional set size of these processes in MiB (shared pages split, so forks are not overcounted)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total / 1024


def mem_available_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")

"""Sandbox cost: one sandboxed run against a bare ``python -c pass`` subprocess, in the same run.

    python benchmarks/sandbox.py [--rounds 40] [--jobs 200] [--parent-mb 1024]

Rows (median wall time of one start-to-exit, rounds interleaved so load drift hits all alike):

* ``bare python -c pass``  — the reference: ``subprocess.run`` of the same interpreter the sandbox
  runs, with its default flags (``site`` imported);
* ``bare python -I -S -B`` — the same interpreter with the sandbox's flags (isolated, no ``site``);
* ``run_python("pass")``   — the whole sandbox: cgroups, prlimit, setpriv, bubblewrap namespaces,
  read-only root, tmpfs scratch, capped pipes, classification;
* the same two again while this process holds ``--parent-mb`` of touched memory (a trainer does):
  the sandbox starts through an exec chain, so its cost must not grow with the parent's size.

Throughput: ``--jobs`` small programs through :class:`SandboxPool` (default concurrency) against
the same number of bare subprocesses through a thread pool of the same size.
The last line is ``summary: ... speedup=X`` with X = bare time / sandbox time (>1 would be faster).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verifiers.code import SandboxPool, find_python, run_python, sandbox_tier  # noqa: E402

PROGRAM = "print(sum(i * i for i in range(20000)))"


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def startup_rows(python: str, rounds: int) -> dict:
    """(median, min) seconds per start for each variant, rounds interleaved. The minimum is the
    least disturbed by other load on the machine; the median is what a run typically costs."""
    variants = {
        "bare python -c pass": lambda: subprocess.run([python, "-c", "pass"], check=True),
        "bare python -I -S -B -c pass": lambda: subprocess.run([python, "-I", "-S", "-B", "-c", "pass"], check=True),
        'run_python("pass")': lambda: run_python("pass"),
    }
    for fn in variants.values():  # warm caches once
        fn()
    times: dict = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def throughput(python: str, jobs: int) -> tuple[float, float, int]:
    """Runs per second: the sandbox pool vs bare subprocesses on the same number of threads."""
    with SandboxPool() as pool:
        workers = pool.max_workers
        t = time.perf_counter()
        results = pool.map([PROGRAM] * jobs)
        ours = jobs / (time.perf_counter() - t)
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise SystemExit(f"sandbox runs failed: {bad[0]}")
    with cf.ThreadPoolExecutor(workers) as ex:
        t = time.perf_counter()
        list(ex.map(lambda _: subprocess.run([python, "-c", PROGRAM], capture_output=True, check=True), range(jobs)))
        ref = jobs / (time.perf_counter() - t)
    return ours, ref, workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds per start-up variant")
    ap.add_argument("--jobs", type=int, default=200, help="programs for the throughput test")
    ap.add_argument("--parent-mb", type=int, default=1024, help="memory this process holds for the big-parent rows (0: skip)")
    args = ap.parse_args()

    python = find_python()
    tier = sandbox_tier()
    print(f"CPU: {cpu_name()} ({len(os.sched_getaffinity(0))} usable cores); tier={tier}; "
          f"interpreter {python}; uid {os.geteuid()}; load average {os.getloadavg()[0]:.1f}")
    rows = startup_rows(python, args.rounds)
    big = {}
    if args.parent_mb > 0:
        ballast = b"\x01" * (args.parent_mb << 20)  # touched pages: a fork would copy their tables
        big = startup_rows(python, max(5, args.rounds // 4))
        del ballast
    print(f"\n{'variant':46s} {'median ms':>10s} {'vs bare':>8s} {'min ms':>8s} {'vs bare':>8s}")
    for table, suffix in ((rows, ""), (big, f" [parent {args.parent_mb} MB]")):
        if not table:
            continue
        ref_med, ref_min = table["bare python -c pass"]
        for name, (med, low) in table.items():
            print(f"{name + suffix:46s} {med * 1000:10.1f} {med / ref_med:7.2f}x {low * 1000:8.1f} {low / ref_min:7.2f}x")
    ours_ps, ref_ps, workers = throughput(python, args.jobs)
    print(f"\nthroughput, {args.jobs} programs, {workers} at a time: sandbox pool {ours_ps:.1f} runs/s, "
          f"bare subprocesses {ref_ps:.1f} runs/s ({ours_ps / ref_ps:.2f}x)")
    key = 'run_python("pass")'
    ours, ours_min = rows[key]
    ref, ref_min = rows["bare python -c pass"]
    same_flags = rows["bare python -I -S -B -c pass"][0]
    big_ratio = big[key][0] / big["bare python -c pass"][0] if big else float("nan")
    print(f"summary: tier={tier} overhead_ratio={ours / ref:.2f} overhead_ratio_min={ours_min / ref_min:.2f} "
          f"overhead_ms={(ours - ref) * 1000:.1f} "
          f"overhead_ratio_same_flags={ours / same_flags:.2f} "
          f"big_parent_ratio={big_ratio:.2f} "
          f"pool_runs_per_s={ours_ps:.1f} bare_runs_per_s={ref_ps:.1f} speedup={ref / ours:.2f}")


if __name__ == "__main__":
    main()

"""Overhead of fault isolation on the RL hot path: Rubric.score_batch versus calling the same
verifiers in a plain Python loop (the reference: no time limit, no failure handling).

    python benchmarks/verifier_overhead.py [--n 2000] [--repeats 5]

Prints per-call overhead for cheap pure-Python verifiers (thread runner), for the single-sample
path (Env.step), and for process isolation (heavy verifiers). Ends with a `summary:` line;
speedup = reference time / ours (below 1 means ours is slower: the price of the time limits).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from rlenv.core import Task
from verifiers import Component, Rubric
from verifiers.format import ExactMatch, TagFormat


def exact(completion, task):
    return float(completion.strip() == task.answer)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="completions per batch")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n = args.n
    tasks = [Task(f"q{i}", str(i % 10)) for i in range(n)]
    completions = [f"<think>t</think><answer>{i % 7}</answer>" for i in range(n)]
    verifiers_ = [exact, TagFormat(), ExactMatch(parser="tag")]
    rubric = Rubric(verifiers_)
    calls = n * len(verifiers_)

    def reference():
        for c, t in zip(completions, tasks):
            for v in verifiers_:
                (v.score if hasattr(v, "score") else v)(c, t)

    rubric.score_batch(completions[:50], tasks[:50])  # warm the pool
    ref, _ = best(reference, args.repeats)
    ours, _ = best(lambda: rubric.score_batch(completions, tasks), args.repeats)
    single_n = min(n, 300)
    single, _ = best(lambda: [rubric.score(completions[i], tasks[i]) for i in range(single_n)], args.repeats)
    single_ref, _ = best(lambda: [reference_one(verifiers_, completions[i], tasks[i]) for i in range(single_n)],
                         args.repeats)
    heavy = Rubric([Component(exact, isolation="process")])
    heavy.score_batch(completions[:20], tasks[:20])  # start the workers
    hn = min(n, 400)
    proc, _ = best(lambda: heavy.score_batch(completions[:hn], tasks[:hn]), max(1, args.repeats // 2))
    proc_ref, _ = best(lambda: [exact(c, t) for c, t in zip(completions[:hn], tasks[:hn])], args.repeats)

    rows = [
        ("score_batch, thread runner", calls, ours, ref),
        ("score (one sample at a time)", single_n * len(verifiers_), single, single_ref),
        ("score_batch, process runner", hn, proc, proc_ref),
    ]
    print(f"CPU: {cpu_name()} ({__import__('os').cpu_count()} logical cores); batch of {n}, best of {args.repeats}")
    print(f"{'path':32} {'calls':>7} {'ours ms':>9} {'plain loop ms':>14} {'overhead us/call':>17} {'ratio':>7}")
    for name, k, t, r in rows:
        print(f"{name:32} {k:7d} {t * 1e3:9.2f} {r * 1e3:14.2f} {(t - r) / k * 1e6:17.1f} {r / t:7.3f}")
    print(f"summary: overhead_us_per_call={(ours - ref) / calls * 1e6:.1f} "
          f"single_overhead_us_per_call={(single - single_ref) / (single_n * len(verifiers_)) * 1e6:.1f} "
          f"process_overhead_us_per_call={(proc - proc_ref) / hn * 1e6:.1f} speedup={ref / ours:.3f}")


def reference_one(vs, c, t):
    return [(v.score if hasattr(v, "score") else v)(c, t) for v in vs]


if __name__ == "__main__":
    main()

"""Our math verifier against the `math-verify` package (0.9.0), side by side on the same case file.

    python benchmarks/math_verify.py [--cases tests/data/math_cases.jsonl] [--workers 2]

For every labelled (gold, pred, equivalent) pair in ``tests/data/math_cases.jsonl`` both verifiers
decide equivalence; the table shows accuracy per category, throughput (pairs/second, one pair at a
time for both) and the slowest single pair. Bare answers are wrapped in ``$…$`` for math-verify, whose
LaTeX extraction needs math mode. math-verify's timeouts are ``signal.alarm``-based and
only work in the main thread, so it runs in the main thread here. Ours is additionally timed in
batch mode (its worker pool). The last line is ``summary: ... speedup=X`` (ours/math-verify
sequential throughput; >1 means ours is faster).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time
import warnings

# this file is named like the package it measures: keep its folder off the import path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.join(_HERE, ".."))

from verifiers.math import is_equivalent, is_equivalent_batch  # noqa: E402


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _math_mode(s: str) -> str:
    """math-verify extracts LaTeX only from math mode (``$…$``, ``\\(…\\)``, ``\\boxed{}``); a bare
    answer such as ``\\frac{1}{2}`` is wrapped in ``$…$`` so it gets its best chance."""
    if any(d in s for d in ("$", "\\(", "\\[", "\\boxed")):
        return s
    return f"${s}$"


def run_math_verify(rows):
    """math-verify's documented usage: parse both, then verify(gold, pred). Exceptions count as False."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    out, times = [], []
    for r in rows:
        t = time.perf_counter()
        try:
            ok = bool(verify(parse(_math_mode(r["gold"])), parse(_math_mode(r["pred"]))))
        except BaseException as e:  # noqa: BLE001 - a crash is a wrong verdict, not the end of the run
            if isinstance(e, KeyboardInterrupt):
                raise
            ok = False
        times.append(time.perf_counter() - t)
        out.append(ok)
    return out, times


def run_ours(rows):
    """``verifiers.math.is_equivalent`` one pair at a time (the same protocol as math-verify)."""
    out, times = [], []
    for r in rows:
        t = time.perf_counter()
        out.append(is_equivalent(r["gold"], r["pred"]))
        times.append(time.perf_counter() - t)
    return out, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "math_cases.jsonl"))
    ap.add_argument("--workers", type=int, default=2, help="worker processes for our batch mode")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    with open(args.cases) as f:
        rows = [json.loads(line) for line in f if line.strip()]

    is_equivalent("1", "x+1")  # start our worker once, outside the timed loop (math-verify imports are warm too)
    ours, t_ours = run_ours(rows)
    t0 = time.perf_counter()
    batch = is_equivalent_batch([(r["gold"], r["pred"]) for r in rows], workers=args.workers)
    t_batch = time.perf_counter() - t0
    theirs, t_theirs = run_math_verify(rows)

    by_cat = collections.defaultdict(lambda: [0, 0, 0])
    for r, a, b in zip(rows, ours, theirs):
        c = by_cat[r["category"]]
        c[0] += 1
        c[1] += a == r["equivalent"]
        c[2] += b == r["equivalent"]
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), python {platform.python_version()}, {len(rows)} pairs")
    print(f"{'category':<18}{'pairs':>6}{'ours':>9}{'math-verify':>13}")
    worse = []
    for cat in sorted(by_cat):
        n, a, b = by_cat[cat]
        print(f"{cat:<18}{n:>6}{a / n:>9.3f}{b / n:>13.3f}")
        if a < b:
            worse.append(cat)
    n = len(rows)
    acc_o = sum(a == r["equivalent"] for r, a in zip(rows, ours)) / n
    acc_t = sum(b == r["equivalent"] for r, b in zip(rows, theirs)) / n
    acc_b = sum(a == r["equivalent"] for r, a in zip(rows, batch)) / n
    print(f"{'overall':<18}{n:>6}{acc_o:>9.3f}{acc_t:>13.3f}")
    pps_o, pps_t = n / sum(t_ours), n / sum(t_theirs)
    print(f"\n{'':<28}{'ours':>12}{'math-verify':>14}")
    print(f"{'pairs/s (one at a time)':<28}{pps_o:>12.1f}{pps_t:>14.1f}")
    calm = [i for i, r in enumerate(rows) if r["category"] != "hostile"]
    pps_o_calm = len(calm) / sum(t_ours[i] for i in calm)
    pps_t_calm = len(calm) / sum(t_theirs[i] for i in calm)
    print(f"{'pairs/s without hostile':<28}{pps_o_calm:>12.1f}{pps_t_calm:>14.1f}")
    print(f"{'slowest pair (s)':<28}{max(t_ours):>12.3f}{max(t_theirs):>14.3f}")
    print(f"{'pairs over 2 s':<28}{sum(t > 2 for t in t_ours):>12d}{sum(t > 2 for t in t_theirs):>14d}")
    print(f"{'batch pairs/s (' + str(args.workers) + ' workers)':<28}{n / t_batch:>12.1f}{'-':>14}  (accuracy {acc_b:.3f})")
    slow = sorted(range(n), key=lambda i: -t_theirs[i])[:3]
    print("math-verify's slowest: " + "; ".join(f"{rows[i]['category']} {t_theirs[i]:.2f}s" for i in slow))
    print(f"categories where ours is below math-verify: {', '.join(worse) or 'none'}")
    print(f"summary: pairs={n} acc_ours={acc_o:.3f} acc_math_verify={acc_t:.3f} pps_ours={pps_o:.1f} "
          f"pps_math_verify={pps_t:.1f} max_s_ours={max(t_ours):.3f} max_s_math_verify={max(t_theirs):.3f} "
          f"batch_pps_ours={n / t_batch:.1f} speedup_without_hostile={pps_o_calm / pps_t_calm:.2f} "
          f"speedup={pps_o / pps_t:.2f}")


if __name__ == "__main__":
    main()

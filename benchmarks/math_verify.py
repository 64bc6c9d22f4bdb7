"""Our math verifier against the `math-verify` package, side by side on public graders' own test suites.

    python benchmarks/math_verify.py [--workers 2] [--cases tests/data/math_cases.jsonl]

Every labelled check of every suite in ``tests/data/math_suites/`` (math-verify 0.9.0's own tests,
hendrycks/math's, NeMo-Skills') goes through both graders, one pair at a time in the main thread
(math-verify's ``signal.alarm`` timeouts only work there). Each math-verify case runs with the
options its test uses (extraction targets, ``float_rounding``, ``strict``, ``allow_set_relation_comp``,
as its ``compare_strings`` helper does); ours with the mapped options (``tests/math_suites.py``).
Other suites go through math-verify's documented ``verify(parse(gold), parse(pred))``, bare answers
wrapped in ``$…$`` (its LaTeX extraction needs math mode). ``--cases`` adds our own case file.

The table gives agreement with the labels per suite for both, pairs per second (one at a time, and
ours also batched over ``--workers`` processes) and the slowest pair. The last line is
``summary: … speedup=X`` — our one-at-a-time throughput over math-verify's on the outside suites, in
this run (>1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
import warnings

# this file is named like the package it measures: keep its folder off the import path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.join(_HERE, ".."))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))

import math_suites  # noqa: E402
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


def _math_mode(s) -> str:
    """A bare answer such as ``\\frac{1}{2}`` wrapped in ``$…$`` so math-verify's LaTeX extraction sees it."""
    s = "" if s is None else str(s)
    if any(d in s for d in ("$", "\\(", "\\[", "\\boxed")):
        return s
    return f"${s}$"


def math_verify_call(row: dict | None):
    """A function (gold, pred) -> bool: math-verify as the case's own test calls it."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if row is None or row.get("call"):  # verify(parse(gold), parse(pred)) with every default
        return lambda g, p: verify(parse(_math_mode(g)), parse(_math_mode(p)))
    targets = []
    for kind in row["match_types"]:
        if kind == "latex":
            targets.append(LatexExtractionConfig(boxed_match_priority=0))
        elif kind == "expr":
            targets.append(ExprExtractionConfig())
    kw = {"float_rounding": row["precision"], "strict": row["strict"],
          "allow_set_relation_comp": row["allow_set_relation_comp"]}
    return lambda g, p: verify(parse(g, targets), parse(p, targets), **kw)


def _timed(fn, pairs):
    out, times = [], []
    for args in pairs:
        t = time.perf_counter()
        try:
            ok = bool(fn(*args))
        except Exception:  # noqa: BLE001 - a crash is a wrong verdict, not the end of the run
            ok = False
        times.append(time.perf_counter() - t)
        out.append(ok)
    return out, times


def load_checks(cases_path: str | None) -> list[tuple]:
    """(suite, gold, pred, expected, our options, math-verify's call) for every check."""
    out = []
    for suite in math_suites.SUITES:
        rows = math_suites.load(suite)
        checks = math_suites.checks(suite)
        by_case = {}
        for k, row in enumerate(rows):
            by_case[f"{row['test']}[{row.get('case', k)}]"] = row
        for c in checks:
            row = by_case[c.case_id.replace("(reversed)", "")] if suite == "math-verify" else None
            out.append((suite, c.gold, c.pred, c.expected, dict(c.options), math_verify_call(row)))
    if cases_path:
        default = math_verify_call(None)
        with open(cases_path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    name = "ours: " + os.path.basename(cases_path)
                    out.append((name, r["gold"], r["pred"], r["equivalent"], {}, default))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="worker processes for our batch mode")
    ap.add_argument("--cases", default=None, help="also run a case file of ours (e.g. tests/data/math_cases.jsonl)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    checks = load_checks(args.cases)

    is_equivalent("1", "x+1")  # start our worker once, outside the timed loop (math-verify imports are warm too)
    math_verify_call(None)("$1$", "$1$")
    ours, t_ours = _timed(lambda g, p, o: is_equivalent(g, p, **o), [(c[1], c[2], c[4]) for c in checks])
    theirs, t_theirs = _timed(lambda g, p, f: f(g, p), [(c[1], c[2], c[5]) for c in checks])
    t0 = time.perf_counter()
    batch = [None] * len(checks)
    groups: dict = {}
    for i, c in enumerate(checks):
        groups.setdefault(tuple(sorted(c[4].items())), []).append(i)
    for opts, idx in groups.items():
        pairs = [(checks[i][1], checks[i][2]) for i in idx]
        for i, v in zip(idx, is_equivalent_batch(pairs, workers=args.workers, **dict(opts))):
            batch[i] = v
    t_batch = time.perf_counter() - t0

    suites = list(dict.fromkeys(c[0] for c in checks))
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), python {platform.python_version()}, {len(checks)} checks")
    print(f"{'suite':<28}{'checks':>7}{'ours':>14}{'math-verify':>16}")
    for s in suites:
        idx = [i for i, c in enumerate(checks) if c[0] == s]
        a = sum(ours[i] == checks[i][3] for i in idx)
        b = sum(theirs[i] == checks[i][3] for i in idx)
        print(f"{s:<28}{len(idx):>7}{f'{a} ({a / len(idx):.1%})':>14}{f'{b} ({b / len(idx):.1%})':>16}")
    outside = [i for i, c in enumerate(checks) if not c[0].startswith("ours")]
    n = len(outside)
    pps_o, pps_t = n / sum(t_ours[i] for i in outside), n / sum(t_theirs[i] for i in outside)
    print(f"\n{'outside suites, ' + str(n) + ' checks':<30}{'ours':>12}{'math-verify':>14}")
    print(f"{'pairs/s (one at a time)':<30}{pps_o:>12.1f}{pps_t:>14.1f}")
    print(f"{'slowest pair (s)':<30}{max(t_ours[i] for i in outside):>12.3f}{max(t_theirs[i] for i in outside):>14.3f}")
    over_o, over_t = sum(t_ours[i] > 2 for i in outside), sum(t_theirs[i] > 2 for i in outside)
    print(f"{'pairs over 2 s':<30}{over_o:>12d}{over_t:>14d}")
    print(f"{'batch pairs/s (' + str(args.workers) + ' workers, all)':<30}{len(checks) / t_batch:>12.1f}{'-':>14}"
          f"  (same verdicts as one at a time: {batch == ours})")
    agree = {s: sum(ours[i] == checks[i][3] for i, c in enumerate(checks) if c[0] == s) /
             sum(c[0] == s for c in checks) for s in suites}
    agree_t = {s: sum(theirs[i] == checks[i][3] for i, c in enumerate(checks) if c[0] == s) /
               sum(c[0] == s for c in checks) for s in suites}
    key = {s: re.sub(r"\W+", "_", s.replace("ours: ", "")).strip("_") for s in suites}
    fields = " ".join(f"agree_{key[s]}={agree[s]:.3f} agree_mv_{key[s]}={agree_t[s]:.3f}" for s in suites)
    print(f"summary: checks={n} {fields} pps_ours={pps_o:.1f} pps_math_verify={pps_t:.1f} "
          f"max_s_ours={max(t_ours[i] for i in outside):.3f} max_s_math_verify={max(t_theirs[i] for i in outside):.3f} "
          f"speedup={pps_o / pps_t:.2f}")


if __name__ == "__main__":
    main()

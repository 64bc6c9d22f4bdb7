"""Measure the spread of the online learning tests: each test's core (``learn()`` in its module) over
seeds, AdamW kernels (fused / per-tensor) and CPU kernel sets (``ATEN_CPU_CAPABILITY``: another
CPU's rounding, simulated), one run at a time, one thread each. Not a test module.

    python tests/measure_learning_spread.py                       # 4 tests x 5 seeds x 2 x 2 = 80 runs
    python tests/measure_learning_spread.py --tests grpo --seeds 0,1 --fused on --cpu avx2
    python tests/measure_learning_spread.py --summary             # the table of what is recorded

Each run appends one line to ``--results`` (default ``learning_spread.jsonl`` in the current
folder); runs already there are skipped, so an interrupted measurement resumes. The summary gives,
per test, min / median / max of the greedy pass-rate gain and of the end value — the numbers each
test's docstring quotes and its margin is set from.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: test name -> module holding its learn() core; "grpo_coin" is GRPO's core trained on a coin-flip
#: reward (each sample a fair coin, whatever its answer; benchmarks/demo_control.py) and evaluated by the verifier: the
#: control, what the learning tests' margins must stand clear of
CORES = {"grpo": "tests.test_grpo", "ppo": "tests.test_ppo", "online_dpo": "tests.test_online_dpo",
         "faulty": "tests.test_faulty_run", "grpo_coin": "tests.test_grpo"}
RUN = """
import json, sys, importlib
from tests.rl_helpers import START_DIR, eval_pass_rates
from benchmarks.demo_control import control_trainer
module, out, seed, fused, control = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "on", sys.argv[5]
kw = {"trainer_class": control_trainer("random")} if control == "coin" else {}
result = importlib.import_module(module).learn(str(START_DIR), out, seed=seed, fused_adamw=fused, **kw)
before, after = eval_pass_rates(result)
print("RESULT " + json.dumps({"before": before, "after": after}))
"""


def run_one(test: str, seed: int, fused: str, cpu: str) -> dict:
    """One learning run in a fresh process under ``ATEN_CPU_CAPABILITY=cpu``."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cpu, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="spread-") as out:
        t0 = time.perf_counter()
        control = "coin" if test.endswith("_coin") else "none"
        proc = subprocess.run([sys.executable, "-c", RUN, CORES[test], out, str(seed), fused, control], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{test} seed {seed} fused {fused} cpu {cpu} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT "):])
    return dict(test=test, seed=seed, fused=fused, cpu=cpu, wall_s=round(wall, 1), **r)


def summary(records: list) -> str:
    """Per test: runs, min / median / max of the gain and of the end pass rate."""
    lines = [f"{'test':<11} {'runs':>4}  {'gain min/med/max':<20} {'end min/med/max':<20} start"]
    for test in CORES:
        rs = [r for r in records if r["test"] == test]
        if not rs:
            continue
        gains = [r["after"] - r["before"] for r in rs]
        ends = [r["after"] for r in rs]
        starts = sorted({round(r["before"], 3) for r in rs})

        def mmm(xs):
            return f"{min(xs):.3f}/{statistics.median(xs):.3f}/{max(xs):.3f}"

        lines.append(f"{test:<11} {len(rs):>4}  {mmm(gains):<20} {mmm(ends):<20} {starts}")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Run the missing combinations, then print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", default=",".join(CORES), help=f"some of {','.join(CORES)}")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--fused", default="on,off")
    ap.add_argument("--cpu", default="default,avx2", help="ATEN_CPU_CAPABILITY values")
    ap.add_argument("--results", default="learning_spread.jsonl")
    ap.add_argument("--summary", action="store_true", help="only print the summary of recorded runs")
    args = ap.parse_args(argv)
    path = Path(args.results)
    records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    if not args.summary:
        done = {(r["test"], r["seed"], r["fused"], r["cpu"]) for r in records}
        for test, seed, fused, cpu in itertools.product(args.tests.split(","), map(int, args.seeds.split(",")),
                                                       args.fused.split(","), args.cpu.split(",")):
            if (test, seed, fused, cpu) in done:
                continue
            r = run_one(test, seed, fused, cpu)
            print(json.dumps(r), flush=True)
            with path.open("a") as f:
                f.write(json.dumps(r) + "\n")
            records.append(r)
    print(summary(records))


if __name__ == "__main__":
    main()

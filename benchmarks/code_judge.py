"""The cost of judging code apart from it: HumanEval's 164 problems, in the same run, two ways.

    python benchmarks/code_judge.py [--rounds 2]

* ``ours`` — ``CodeVerifier.score_batch`` on the canonical solutions: per problem a solution
  sandbox and a judge sandbox joined by pipes (the verdict never depends on the solution's code);
* ``reference`` — what the official harness does, in the same sandbox pool: one sandbox per
  problem running ``prompt + canonical + test + check(entry_point)`` together (the candidate shares
  the process with its asserts, so it could fake a pass; here it is only the cost baseline).

Rounds alternate the two so load drift hits both. Both must pass 164/164. The last line is
``summary: … speedup=X`` with X = reference time / our time (< 1: we are slower).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tasks.code import humaneval_rows  # noqa: E402
from verifiers.code import CodeVerifier, default_pool, sandbox_tier  # noqa: E402


def reference_sources(tasks) -> list:
    out = []
    for t in tasks:
        target = t.info["target"].split("```python\n", 1)[1].rsplit("```", 1)[0]
        out.append(f"{target}\n{t.answer['test']}\ncheck({t.answer['entry_point']})\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each way")
    args = ap.parse_args()
    tasks = humaneval_rows()
    verifier, pool = CodeVerifier(), default_pool()
    refs = reference_sources(tasks)
    print(f"tier={sandbox_tier()}; {len(os.sched_getaffinity(0))} usable cores; pool of {pool.max_workers}; "
          f"load average {os.getloadavg()[0]:.1f}")
    times: dict = {"ours": [], "reference": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ours = verifier.score_batch([x.info["target"] for x in tasks], tasks)
        times["ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = pool.map(refs)
        times["reference"].append(time.perf_counter() - t)
        passed, ref_passed = sum(r.reward == 1.0 for r in ours), sum(r.status == "ok" for r in ref)
        if passed != len(tasks) or ref_passed != len(tasks):
            raise SystemExit(f"not every canonical solution passed: ours {passed}, reference {ref_passed}")
    print(f"\n{'way':12s} {'median s':>9s} {'per problem ms':>15s}")
    for name, v in times.items():
        print(f"{name:12s} {statistics.median(v):9.2f} {statistics.median(v) / len(tasks) * 1000:15.1f}")
    ours_s, ref_s = statistics.median(times["ours"]), statistics.median(times["reference"])
    print(f"summary: tasks={len(tasks)} passed={len(tasks)} ours_s={ours_s:.2f} reference_s={ref_s:.2f} "
          f"speedup={ref_s / ours_s:.2f}")


if __name__ == "__main__":
    main()

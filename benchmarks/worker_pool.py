"""How should the killable worker pool start its processes? ``fork`` against ``forkserver``, measured.

    python benchmarks/worker_pool.py [--respawns 20] [--big-gb 2]

For each start method, :class:`verifiers.workers.WorkerPool` running the math comparison
(``verifiers.math.compare:judge``):

- **respawn**: a call that hangs is killed at its limit, then the next comparison is timed — the
  fresh worker's start plus one ``judge`` call (median over ``--respawns``), next to a steady call
  on a warm worker. Measured twice: from a small parent, and from a parent holding ``--big-gb`` of
  touched memory (a trainer holds gigabytes; fork copies the page tables of all of it);
- **torch after threads**: the parent first runs a torch matmul on two intra-op threads (as a
  trainer does), then a worker runs one. A forked child inherits OpenMP's state without its
  threads and hangs; the call is cut at ``--hang-s`` and reported as ``hung``.

``fork`` is the reference (what the math pool used). The last line is
``summary: ... speedup=X`` with X = fork's respawn time / forkserver's, from the big parent.
Timings are wall clock: on a loaded machine compare the two columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verifiers.workers import WorkerPool  # noqa: E402

JUDGE = "verifiers.math.compare:judge"
PAIR = ("\\frac{1}{2}", "0.5")


def _torch_matmul() -> float:
    """A torch job for a worker (module level, so it pickles by reference)."""
    import torch

    a = torch.randn(1500, 1500)
    return float((a @ a).sum())


def respawn_ms(method: str, respawns: int) -> tuple[float, float]:
    """(median ms of a respawn + one judge call, median ms of a steady judge call)."""
    pool = WorkerPool(JUDGE, workers=1, start_method=method)
    try:
        assert pool.map([PAIR], timeout=120) == [True]  # first start (a forkserver starts here)
        steady = []
        for _ in range(respawns):
            t = time.perf_counter()
            pool.map([PAIR], timeout=60)
            steady.append(time.perf_counter() - t)
        fresh = []
        for _ in range(respawns):
            assert pool.map([(30,)], timeout=0.05, on_timeout="killed", fn="time:sleep") == ["killed"]
            t = time.perf_counter()
            assert pool.map([PAIR], timeout=60) == [True]
            fresh.append(time.perf_counter() - t)
        return 1000 * statistics.median(fresh), 1000 * statistics.median(steady)
    finally:
        pool.close()


def torch_after_threads(method: str, hang_s: float) -> str:
    """``ok`` when a worker can run torch after the parent used intra-op threads, else ``hung``."""
    pool = WorkerPool(workers=1, start_method=method)
    try:
        out = pool.map([()], timeout=hang_s, on_timeout="hung", on_error=lambda e: f"error: {e}", fn=_torch_matmul)
        return "hung" if out[0] == "hung" else "ok" if isinstance(out[0], float) else str(out[0])
    finally:
        pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--respawns", type=int, default=20)
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--hang-s", type=float, default=30.0)
    args = ap.parse_args()
    import verifiers.math.compare  # noqa: F401  (fork's children inherit it: its best case)

    methods = ("fork", "forkserver")
    rows = {m: {} for m in methods}
    for m in methods:
        rows[m]["respawn"], rows[m]["steady"] = respawn_ms(m, args.respawns)
    ballast = bytearray(int(args.big_gb * 2**30))
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident, as a model's weights are
    for m in methods:
        rows[m]["respawn_big"], _ = respawn_ms(m, args.respawns)
    del ballast
    import torch

    torch.set_num_threads(2)
    _torch_matmul()  # the parent's OpenMP pool is now running
    for m in methods:
        rows[m]["torch"] = torch_after_threads(m, args.hang_s)

    print(f"{'start method':<12} {'steady call ms':>15} {'respawn+call ms':>16} "
          f"{f'respawn+call ms ({args.big_gb:g} GB parent)':>32} {'torch job after parent threads':>31}")
    for m in methods:
        r = rows[m]
        print(f"{m:<12} {r['steady']:>15.1f} {r['respawn']:>16.1f} {r['respawn_big']:>32.1f} {r['torch']:>31}")
    f, s = rows["fork"], rows["forkserver"]
    print(f"summary: respawn_ms_fork={f['respawn']:.1f} respawn_ms_forkserver={s['respawn']:.1f} "
          f"respawn_ms_fork_big={f['respawn_big']:.1f} respawn_ms_forkserver_big={s['respawn_big']:.1f} "
          f"torch_fork={f['torch']} torch_forkserver={s['torch']} speedup={f['respawn_big'] / s['respawn_big']:.2f}")


if __name__ == "__main__":
    main()

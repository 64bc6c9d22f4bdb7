"""Training wall time until the greedy pass rate reaches a target: our GRPO next to TRL's.

Both start from the same SFT checkpoint of the tiny preset on two-digit addition (made once with
our SFTTrainer until its greedy pass rate on the held-apart tasks first reaches ``--sft-target``,
then cached), train on the same task list with matched settings (P prompts × G samples, same
learning rate, temperature, AdamW, β = 0, μ = 1, token-mean loss, ε = 0.2/0.28) and are evaluated
greedily every ``--eval-every`` steps on the same ``--eval-tasks`` held-apart problems. The clock
counts training steps only (evaluation excluded). Several seeds; ours and TRL's runs alternate.

    python benchmarks/time_to_accuracy.py                  # 3 seeds, target 0.55
    python benchmarks/time_to_accuracy.py --seeds 5 --target 0.6
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (Setup, alternate, device_name, run_worker, summary_line, versions,  # noqa: E402
                                worker_main)

#: the task: two-digit addition; ``--prompt short`` drops the env's system prompt (~30-token
#: prompts, as in the learning tests), ``--prompt env`` keeps it (~135 tokens, as in grpo_vs_trl.py)
PROMPTS = {"short": dict(digits=2, operators="+", system_prompt=""), "env": dict(digits=2, operators="+")}
#: bump when the SFT recipe changes so a cached checkpoint is rebuilt
SFT_VERSION = 2


def sft_checkpoint(target: float, eval_tasks: int, cache: Path, prompt: str = "short") -> tuple:
    """The cached SFT start (``(path, pass rate)``): our SFTTrainer on the env's own targets,
    evaluated every 25 steps, stopped at the first evaluation ≥ ``target``."""
    import rlenv
    import torch
    from rlenv.models.tiny import resolve_model_path
    from trainers import SFTConfig, SFTTrainer
    from rlenv.evaluation import evaluate_pass_rate

    env_kwargs = PROMPTS[prompt]
    out = cache / f"bench-sft-arith-v{SFT_VERSION}-{prompt}-{target:g}-{eval_tasks}"
    if (out / "config.json").exists():
        return str(out), float((out / "pass_rate.txt").read_text())
    torch.set_num_threads(1)
    env = rlenv.make("arithmetic-v0", **env_kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        tr = SFTTrainer(resolve_model_path("preset:tiny"), SFTConfig(
            output_dir=tmp, learning_rate=1e-3, max_steps=3000, per_device_train_batch_size=32,
            lr_scheduler="constant", report_to="none", progress_bar=False, seed=0),
            env=rlenv.make("arithmetic-v0", **env_kwargs), num_env_examples=96_000)
        tr._prepare()  # stepped by hand: evaluate between steps
        rate = 0.0
        for step in range(1, tr.config.max_steps + 1):
            tr.training_step(tr.next_step_data())
            tr.global_step = step
            if step % 25 == 0:
                rate = evaluate_pass_rate(tr.unwrapped_model, tr.tokenizer, env, num_tasks=eval_tasks,
                                          max_new_tokens=12, batch_size=eval_tasks)["pass_rate"]
                tr.unwrapped_model.train()
                print(f"  sft step {step}: pass rate {rate:.3f}", file=sys.stderr, flush=True)
                if rate >= target:
                    break
        folder = tr.save_model(Path(tmp) / "model")  # written whole, then moved into the cache
        (folder / "pass_rate.txt").write_text(f"{rate}")
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, out) if not out.exists() else None
    return str(out), rate


def time_to_target(run: dict, target: float):
    """``(training seconds at the first evaluation ≥ target or None, steps, last pass rate)``."""
    for step, clock, rate in run["evals"]:
        if rate >= target:
            return clock, step, rate
    step, clock, rate = run["evals"][-1]
    return None, step, rate


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.55)
    ap.add_argument("--sft-target", type=float, default=0.30)
    ap.add_argument("--eval-tasks", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=60, help="a run that has not reached the target stops here")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", choices=sorted(PROMPTS), default="short",
                    help="short: no system prompt (~30 tokens); env: the env's system prompt (~135 tokens)")
    ap.add_argument("--cache", default=os.environ.get("RLENV_CACHE", str(Path.home() / ".cache" / "rlenv")))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    start, start_rate = sft_checkpoint(args.sft_target, args.eval_tasks, Path(args.cache), args.prompt)
    print(f"SFT start: {start} (greedy pass rate {start_rate:.3f}, {time.perf_counter() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    runs = {"ours": [], "trl": []}
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            s = Setup(model_dir=start, env_kwargs=PROMPTS[args.prompt], prompts=args.prompts, group=args.group,
                      max_new_tokens=args.new_tokens, learning_rate=args.lr, temperature=args.temperature, seed=seed,
                      steps=args.max_steps, warmup=0, threads=args.threads, eval_tasks=args.eval_tasks,
                      eval_every=args.eval_every, target=args.target)
            for side in alternate(("ours", "trl"), seed):
                print(f"seed {seed}: {side} ...", file=sys.stderr, flush=True)
                runs[side].append(run_worker(__file__, side, s, Path(work), f"s{seed}", args.timeout))

    print(f"device: {device_name(False)}   {versions()}")
    print(f"{args.prompt} prompts; tiny preset from SFT (greedy pass rate {start_rate:.2f} on {args.eval_tasks} held-apart problems), "
          f"{args.prompts} prompts × {args.group} samples, ≤ {args.new_tokens} new tokens, lr {args.lr}, "
          f"T = {args.temperature}, target {args.target}, eval every {args.eval_every} steps (not timed), "
          f"≤ {args.max_steps} steps")
    print(f"{'':<22}" + "".join(f"{'seed ' + str(i) + ' s (steps)':>22}" for i in range(args.seeds)) + f"{'median s':>11}")
    medians = {}
    for name, side in (("TRL 1.16 GRPOTrainer", "trl"), ("rlenv GRPOTrainer", "ours")):
        cells, times = [], []
        for run in runs[side]:
            t, step, rate = time_to_target(run, args.target)
            # a run that never got there counts with its whole training time (a lower bound)
            times.append(t if t is not None else run["evals"][-1][1])
            cells.append(f"{t:.1f} ({step})" if t is not None else f">{run['evals'][-1][1]:.1f} ({step}, {rate:.2f})")
        medians[side] = statistics.median(times)
        reached = sum(time_to_target(r, args.target)[0] is not None for r in runs[side])
        print(f"{name:<22}" + "".join(f"{c:>22}" for c in cells) + f"{medians[side]:>11.1f}"
              + ("" if reached == len(runs[side]) else f"   ({reached}/{len(runs[side])} reached the target)"))
    speedup = medians["trl"] / max(medians["ours"], 1e-9)
    print(f"ratio of medians TRL/ours: {speedup:.2f}x")
    res = {"device": device_name(False).split(",")[0], "seeds": args.seeds, "target": args.target,
           "sft_pass_rate": start_rate, "ours_median_s": medians["ours"], "trl_median_s": medians["trl"],
           "ours_reached": sum(time_to_target(r, args.target)[0] is not None for r in runs["ours"]),
           "trl_reached": sum(time_to_target(r, args.target)[0] is not None for r in runs["trl"]),
           "speedup": speedup}
    print(summary_line(res))
    return res


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker_main(sys.argv)
    else:
        main()

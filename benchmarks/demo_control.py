"""The README's main job, over seeds, next to a control that gets no information from the verifier.

For each seed (and each torch CPU kernel set asked for) the script runs
``examples/arithmetic_sft_grpo.yaml`` exactly as ``rlenv train`` does, then runs its GRPO stage a
second time from the same SFT model with **shuffled rewards**: each group's rewards (the verifier's
verdicts on its G completions) are permuted at random among those G completions before the
advantages are computed. The control has the same prompts, sampling seeds, steps and optimiser,
and exactly the same rewards per group at every step (so the same reward curve); only *which*
completion earned a reward is lost. Its greedy pass rate is still judged against the true answers:
if GRPO's gain came from anything but the verifier's judgement of each completion (more steps, the
optimiser, sharpening what SFT left), the control would rise too.

    python benchmarks/demo_control.py                                   # seeds 0 1 2
    python benchmarks/demo_control.py --seeds 0 1 2 --capability default avx2
    python benchmarks/demo_control.py --seeds 0 --no-control            # the README rows only

Each run is its own subprocess (``ATEN_CPU_CAPABILITY`` is read when torch loads), with torch's
default thread count as ``rlenv train`` has. The table gives, per run, the SFT and GRPO greedy pass
rates (128 held-out problems), the control's, and the wall and CPU seconds of the real run; the
last line is ``summary: … min_gain=… max_control_move=…``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "examples" / "arithmetic_sft_grpo.yaml"


def control_trainer(mode: str = "random"):
    """``GRPOTrainer`` whose rewards carry no information about the completions: ``random`` draws
    each completion's reward as a fair coin (seeded), ``shuffled`` permutes each group's rewards (the
    verifier's verdicts) among its G completions. ``batch.correct`` keeps the true verdicts, so the
    pass rates and evaluations still measure the task."""
    import torch

    from trainers import GRPOTrainer

    class ControlGRPO(GRPOTrainer):
        def rollout(self, n_prompts, round_=0):
            batch = super().rollout(n_prompts, round_)
            gen = torch.Generator().manual_seed(self._seed(round_) + 1)
            if mode == "random":
                batch.rewards = torch.randint(0, 2, batch.rewards.shape, generator=gen).to(batch.rewards)
                return batch
            rewards = batch.rewards.clone()
            for g in batch.group_ids.unique():
                rows = (batch.group_ids == g).nonzero().flatten()
                rewards[rows] = batch.rewards[rows[torch.randperm(len(rows), generator=gen)]]
            batch.rewards = rewards
            return batch

    return ControlGRPO


def worker(args) -> None:
    """One run in this process: ``real`` (the whole spec, as ``rlenv train`` runs it) or
    ``control`` (its GRPO stage from ``--sft-model`` with shuffled rewards); the stage results are
    written to ``--out``."""
    import rlenv
    from rlenv.runspec import load_spec
    from trainers.pipeline import run_spec

    overrides = [f"seed={args.seed}", f"output_dir={args.run_dir}", "logging.report_to=none"]
    if args.worker == "real":
        results = run_spec(str(args.spec), overrides, print_summary=False)
    else:
        spec = load_spec(args.spec, overrides)
        stage = next(s for s in reversed(spec.stage_list) if s.kind == "grpo")
        trainer = control_trainer(args.control)(model=args.sft_model, env=rlenv.make(spec.env.id, **spec.env.kwargs),
                                            config=stage.config)
        out = trainer.train()
        evals = [h["eval/pass_rate"] for h in out["eval_history"] if "eval/pass_rate" in h]
        results = [{"kind": "grpo", "before": evals[0], "after": evals[-1], "steps": out["steps"]}]
    Path(args.out).write_text(json.dumps(results, default=str))


def run_child(kind: str, spec: Path, seed: int, capability: str, work: Path, sft_model: str = "",
              control: str = "random") -> dict:
    """One run as a subprocess; its stage results plus wall and CPU seconds."""
    tag = f"{kind}-{seed}-{capability}"
    out = work / f"{tag}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    cmd = [sys.executable, __file__, "--worker", kind, "--control", control, "--spec", str(spec), "--seeds", str(seed),
           "--run-dir", str(work / tag), "--out", str(out), "--sft-model", sft_model]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{tag} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"stages": json.loads(out.read_text()), "wall_s": wall, "cpu_s": cpu}


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(DEMO))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--capability", nargs="+", default=["native"],
                    help="ATEN_CPU_CAPABILITY values to run under (native: leave it unset)")
    ap.add_argument("--no-control", action="store_true", help="only the real runs (the README table)")
    ap.add_argument("--control", choices=("random", "shuffled"), default="random",
                    help="the control's rewards: fair coins, or the verifier's permuted within each group")
    ap.add_argument("--work", default="", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--worker", choices=("real", "control"), help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--sft-model", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.seed = args.seeds[0]
        worker(args)
        return {}

    from benchmarks._common import device_name, summary_line

    work = Path(args.work or tempfile.mkdtemp(prefix="demo-control-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {Path(args.spec).name} on {device_name(False)}; runs in {work}")
    head = "| seed | kernels | SFT | GRPO | gain | control GRPO | control move | wall s | CPU s |"
    print(head + "\n|" + "---:|" * (head.count("|") - 1))
    gains, moves, walls, ends = [], [], [], []
    for capability in args.capability:
        for seed in args.seeds:
            real = run_child("real", Path(args.spec), seed, capability, work)
            sft, grpo = real["stages"][0], real["stages"][-1]
            gain = grpo["after"] - grpo["before"]
            gains.append(gain)
            ends.append(grpo["after"])
            walls.append(real["wall_s"])
            ctrl_after = move = None
            if not args.no_control:
                ctrl = run_child("control", Path(args.spec), seed, capability, work, sft_model=sft["model_dir"],
                                 control=args.control)
                c = ctrl["stages"][-1]
                ctrl_after, move = c["after"], c["after"] - c["before"]
                moves.append(move)
            print(f"| {seed} | {capability} | {pct(sft['after'])} | {pct(grpo['after'])} | {100 * gain:+.1f} | "
                  f"{pct(ctrl_after)} | {'—' if move is None else f'{100 * move:+.1f}'} | "
                  f"{real['wall_s']:.0f} | {real['cpu_s']:.0f} |", flush=True)
    res = {"runs": len(gains), "min_gain": min(gains), "min_end": min(ends), "max_wall_s": max(walls)}
    if moves:
        res["max_control_move"] = max(moves, key=abs)
    print(summary_line(res))
    return res


if __name__ == "__main__":
    main()

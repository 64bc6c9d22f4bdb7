"""Seconds per GRPO step: our GRPOTrainer next to TRL's GRPOTrainer, same everything.

Both sides get the same model folder, the same task list and reward, the same group size, lengths,
sampling (temperature 1, no top-k/top-p), AdamW at the same constant learning rate, β = 0,
μ = 1, token-mean loss with ε = 0.2/0.28, one optimizer update per step over all P × G rows, HF
generation on both sides. Each run is a fresh subprocess (peak memory is its own); runs alternate
ours / TRL for ``--rounds`` rounds so both see the same machine load; the first ``--warmup`` steps
of each run are not timed.

    python benchmarks/grpo_vs_trl.py               # CPU: tiny preset on arithmetic-v0
    python benchmarks/grpo_vs_trl.py --gpu         # CUDA: Qwen2.5-0.5B-shaped random model (saved in bf16),
                                                   # 8 prompts × 8 samples, 256 new tokens
    python benchmarks/grpo_vs_trl.py --gpu --precision bf16   # pure bf16 weights and AdamW on both sides

``--precision`` is the same on both sides: ``mixed`` (default on the GPU) keeps float32 master
weights and computes under bf16 autocast — our ``model_dtype="auto"``, TRL loading float32 with
``bf16=True``; ``bf16`` trains pure bf16 weights and AdamW states — TRL's default with a bf16
checkpoint (its dtype comes from the checkpoint), our ``model_dtype="bfloat16"``; ``fp32`` (CPU
default) no autocast. ``--model mini`` is the GPU's code path (random Qwen2 weights, id tokenizer,
random prompts) at a size a CPU runs in seconds.

It also prints training-phase MFU: 6 × params × trained tokens / training seconds / the matmul peak
measured in this script (bf16 on the GPU). A random-weight model practically never samples eos
(1 in 151,936 per token), so both sides generate the full length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (Setup, alternate, device_name, make_model_dir, matmul_peak_flops,  # noqa: E402
                                run_worker, summary_line, versions, worker_main)


def aggregate(runs: list, warmup: int) -> dict:
    """Medians over the timed steps of all rounds of one side."""
    steps = [st for r in runs for st in r["steps"][warmup:]]
    med = {k: statistics.median(st[k] for st in steps) for k in ("total_s", "generation_s", "scoring_s", "training_s")}
    gen_tokens = sum(st["completion_tokens"] for st in steps)
    med["tok_s"] = gen_tokens / max(sum(st["generation_s"] for st in steps), 1e-9)
    med["completion_len"] = gen_tokens / len(steps)
    med["trained_tokens"] = statistics.median(st["trained_tokens"] for st in steps)
    med["train_flops_s"] = 6 * runs[0]["params"] * sum(st["trained_tokens"] for st in steps) / max(
        sum(st["training_s"] for st in steps), 1e-9)
    med["peak_mem_gib"] = max(r["peak_mem_gib"] for r in runs)
    med["steps"] = len(steps)
    return med


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="CUDA, Qwen2.5-0.5B-shaped random-weight model")
    ap.add_argument("--model", choices=["tiny", "mini", "qwen0.5b"], default=None,
                    help="default: tiny (arithmetic-v0) on CPU, qwen0.5b (random prompts) on the GPU")
    ap.add_argument("--precision", choices=["fp32", "bf16", "mixed"], default=None,
                    help="both sides; default: fp32 on CPU, mixed on the GPU")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=None, help="default: 32 on CPU, 256 on the GPU")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each run")
    ap.add_argument("--rounds", type=int, default=2, help="ours/TRL run pairs, alternating")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run on CPU")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="on both sides")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = ap.parse_args(argv)
    import torch

    if args.gpu and not torch.cuda.is_available():
        ap.error("--gpu given but no CUDA device is available")
    new = args.new_tokens or (256 if args.gpu else 32)
    shape = args.model or ("qwen0.5b" if args.gpu else "tiny")
    precision = args.precision or ("mixed" if args.gpu else "fp32")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        s = Setup(model_dir=make_model_dir(work, shape), env_kwargs={}, prompts=args.prompts,
                  group=args.group, max_new_tokens=new, learning_rate=args.lr, steps=args.steps, warmup=args.warmup,
                  gpu=args.gpu, precision=precision, gradient_checkpointing=args.gradient_checkpointing,
                  threads=args.threads, random_prompts=0 if shape == "tiny" else 32)
        runs = {"ours": [], "trl": []}
        for r in range(args.rounds):
            for side in alternate(("ours", "trl"), r):
                print(f"round {r + 1}/{args.rounds}: {side} ...", file=sys.stderr, flush=True)
                runs[side].append(run_worker(__file__, side, s, work, f"r{r}", args.timeout))
                done = aggregate(runs[side][-1:], args.warmup)  # kept in the log if a later run fails
                print(f"  {side}: median step {done['total_s']:.3f} s, peak {done['peak_mem_gib']:.2f} GiB",
                      file=sys.stderr, flush=True)
    peak = matmul_peak_flops(args.gpu)
    ours, trl = aggregate(runs["ours"], args.warmup), aggregate(runs["trl"], args.warmup)

    model = {"qwen0.5b": "Qwen2.5-0.5B-shaped, random, random prompts", "mini": "mini Qwen2, random, random prompts",
             "tiny": "tiny preset, arithmetic-v0"}[shape]
    model += {"fp32": ", float32", "bf16": ", pure bf16 weights + AdamW (both)",
              "mixed": ", float32 master weights + bf16 autocast (both)"}[precision]
    print(f"device: {device_name(args.gpu)}   {versions()}")
    print(f"model: {model} ({runs['ours'][0]['params'] / 1e6:.2f} M params)   {args.prompts} prompts × "
          f"{args.group} samples, ≤ {new} new tokens, lr {args.lr}, β = 0, μ = 1, "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'} (both)   "
          f"{ours['steps']} timed steps per side over {args.rounds} alternating rounds, medians")
    print(f"{'':<22}{'step s':>9}{'gen s':>9}{'score s':>9}{'train s':>9}{'gen tok/s':>11}"
          f"{'compl len':>11}{'peak GiB':>10}{'MFU %':>8}")
    for name, m in (("TRL 1.16 GRPOTrainer", trl), ("rlenv GRPOTrainer", ours)):
        print(f"{name:<22}{m['total_s']:>9.3f}{m['generation_s']:>9.3f}{m['scoring_s']:>9.3f}{m['training_s']:>9.3f}"
              f"{m['tok_s']:>11.1f}{m['completion_len'] / (args.prompts * args.group):>11.1f}"
              f"{m['peak_mem_gib']:>10.2f}{100 * m['train_flops_s'] / peak:>8.1f}")
    ratio = {k: trl[k] / max(ours[k], 1e-9) for k in ("total_s", "generation_s", "scoring_s", "training_s")}
    print(f"{'ratio TRL/ours':<22}{ratio['total_s']:>8.2f}x{ratio['generation_s']:>8.2f}x{ratio['scoring_s']:>8.2f}x"
          f"{ratio['training_s']:>8.2f}x{ours['tok_s'] / max(trl['tok_s'], 1e-9):>10.2f}x{'':>11}"
          f"{ours['peak_mem_gib'] / max(trl['peak_mem_gib'], 1e-9):>9.2f}x")
    print(f"MFU = 6 × params × trained tokens / training s / measured {'bf16' if args.gpu else 'float32'} "
          f"matmul peak {peak / 1e12:.3f} TFLOP/s")
    engine = runs["ours"][0].get("engine", {})
    if engine.get("engine/cuda_graph_capture_failures"):
        print("WARNING: our engine's CUDA graph capture failed; it decoded eagerly (see the worker's log)")
    res = {"device": device_name(args.gpu).split(",")[0], "model": shape, "precision": precision,
           "ours_step_s": ours["total_s"], "trl_step_s": trl["total_s"],
           "ours_tok_s": ours["tok_s"], "trl_tok_s": trl["tok_s"], "ours_peak_gib": ours["peak_mem_gib"],
           "trl_peak_gib": trl["peak_mem_gib"], "ours_mfu": ours["train_flops_s"] / peak,
           "trl_mfu": trl["train_flops_s"] / peak, "peak_tflops": peak / 1e12,
           "ours_cuda_graph": int(engine.get("engine/cuda_graph", 0.0)),
           "ours_graph_failures": int(engine.get("engine/cuda_graph_capture_failures", 0.0)),
           "speedup": ratio["total_s"]}
    print(summary_line(res))
    return res


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker_main(sys.argv)
    else:
        main()

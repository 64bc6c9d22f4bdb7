"""Make the pinned start of the RL learning tests: ``tests/data/rl_start/`` (the ``tiny`` preset after
a short SFT on two-digit addition, saved with ``save_pretrained`` with its tokenizer).

Why pinned: the SFT that produces it ends on the tiny model's phase transition, where another
CPU's float rounding (or fused AdamW) moves the greedy pass rate by tens of points (76 % on an
AMD EPYC, 12 % on an Intel Xeon from the same recipe). Trained once and shipped, the start is the
same bytes on every machine; the learning tests load it with ``from_pretrained`` like any model.

    python tests/data/make_rl_start.py                 # writes tests/data/rl_start/ (+ start.json)
    python tests/data/make_rl_start.py --out /tmp/s --save-steps 100 --steps 1200   # explore

``start.json`` records the recipe, the machine it ran on and the measured greedy pass rate (the
tests' eval settings: 128 held-out tasks, 12 new tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run as a script from anywhere

from tests.rl_helpers import ENV_KWARGS, EVAL  # noqa: E402  (the learning tests' env and eval)

#: the recipe
STEPS, LR, BATCH, WARMUP, SEED, FUSED = 900, 1e-3, 32, 10, 0, "off"


def main(argv=None) -> dict:
    """Train the start, write it to ``--out`` (replacing it atomically) and return ``start.json``'s dict."""
    import torch

    import rlenv
    from rlenv.models.tiny import create_tiny_model
    from trainers.config import SFTConfig
    from trainers.sft import SFTTrainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "rl_start"))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--save-steps", type=int, default=0, help="also keep intermediate checkpoints (exploring)")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--fused-adamw", choices=("on", "off"), default=FUSED)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="rl-start-"))
    base = create_tiny_model(work / "tiny", preset="tiny", seed=0)
    env = rlenv.make("arithmetic-v0", **ENV_KWARGS)
    cfg = SFTConfig(output_dir=str(work / "sft"), max_steps=args.steps, learning_rate=LR,
                    per_device_train_batch_size=BATCH, lr_scheduler="constant_with_warmup", warmup_steps=WARMUP,
                    **EVAL,
                    eval_every=args.eval_every, save_steps=args.save_steps, save_total_limit=None,
                    report_to="none", progress_bar=False, seed=SEED, fused_adamw=args.fused_adamw == "on")
    result = SFTTrainer(str(base), cfg, env=env, num_env_examples=args.steps * BATCH).train()
    history = [{"step": h["step"], "pass_rate": h["eval/pass_rate"]} for h in result["eval_history"]]
    info = {"recipe": dict(preset="tiny", preset_seed=0, env="arithmetic-v0", env_kwargs=ENV_KWARGS,
                           sft_steps=args.steps, learning_rate=LR, batch=BATCH, warmup_steps=WARMUP,
                           lr_scheduler="constant_with_warmup", seed=SEED,
                           fused_adamw=args.fused_adamw == "on"),
            "pass_rate": history[-1]["pass_rate"], "eval": EVAL,
            "eval_history": history,
            "made_on": {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        "machine": platform.processor() or platform.machine()}}
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(result["model_dir"], tmp)
    (tmp / "start.json").write_text(json.dumps(info, indent=1) + "\n")
    if args.save_steps:  # exploring: keep the intermediate models beside the final one
        for ck in sorted((work / "sft" / "checkpoints").glob("checkpoint-*")):
            shutil.copytree(ck / "model" if (ck / "model").exists() else ck, tmp / "steps" / ck.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: info[k] for k in ("pass_rate", "eval_history")}))
    return info


if __name__ == "__main__":
    main()

"""A fork server for tests/test_kill_resume.py: imports torch/transformers/the trainers once, then
forks one real SFT training run per request, so a trial costs the run, not another interpreter start.

Protocol (one JSON object per line on stdin; replies on stdout):

    {"out": DIR, "model": PATH, "max_steps": N, "save_steps": S, "slow_write_s": 0.1, "resume": true}
    -> "pid <child pid>"   (the test may now SIGKILL / SIGTERM / SIGINT that pid)
    -> "exit <status>"     (os.waitpid's decoded status: the exit code, or -signal)

The child is a plain :class:`trainers.sft.SFTTrainer` whose ``step_metrics`` logs draws from the
python, numpy and torch global RNGs (``probe/*``): a resumed run reproduces the uninterrupted run's
probes only if the checkpoint restored every RNG state exactly. ``slow_write_s`` makes the child
(only the child) sleep inside each checkpoint write, after its files are written and before the
manifest and the rename, so random kills land mid-checkpoint often.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import numpy as np
import torch

import trainers.checkpoint as checkpoint
from trainers.config import SFTConfig
from trainers.sft import SFTTrainer

# 36 rows / batch 4 = 9 micro-batches per epoch: longer runs cross epochs, so the data position
# (epoch, index) must survive restarts too
ROWS = [{"prompt": f"What is {a} + {b}?", "completion": f"<a>{a + b}</a>"} for a in range(6) for b in range(6)]


class ProbedSFT(SFTTrainer):
    """SFT that also logs one draw of each global RNG per step."""

    def step_metrics(self, data):
        return {"probe/torch": float(torch.rand(()).item()), "probe/python": random.random(),
                "probe/numpy": float(np.random.rand())}


def config(req: dict) -> SFTConfig:
    """The run's config: small, frequent checkpoints, every step logged."""
    return SFTConfig(output_dir=req["out"], learning_rate=3e-3, max_steps=req["max_steps"],
                     save_steps=req.get("save_steps", 1), save_total_limit=req.get("save_total_limit", 3),
                     per_device_train_batch_size=4, lr_scheduler="linear", warmup_steps=2, weight_decay=0.01,
                     progress_bar=False, report_to="none", logging_steps=1,
                     resume_from_checkpoint="latest" if req.get("resume", True) else None)


def child(req: dict) -> None:
    """Body of one forked run."""
    torch.set_num_threads(1)
    os.dup2(2, 1)  # stdout is the protocol channel: anything the run prints goes to stderr
    sys.stdout = sys.stderr
    delay = float(req.get("slow_write_s", 0.0))
    if delay:
        real = checkpoint._fsync_tree

        def slow_fsync_tree(root):  # the files are in the temp folder; no manifest, no rename yet
            time.sleep(delay)
            real(root)

        checkpoint._fsync_tree = slow_fsync_tree
    ProbedSFT(req["model"], config(req), train_dataset=ROWS).train()


def main() -> None:
    """Serve requests until stdin closes."""
    torch.set_num_threads(1)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(req)
            except BaseException as e:  # report, then leave without running the parent's cleanup
                print(f"child error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    main()

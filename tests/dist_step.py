"""Run by tests/test_distributed.py under ``accelerate launch``: one training step of a trainer,
then print a digest of the weights on each rank and save its weights and the gradient the optimizer
stepped with (not a test module itself)."""

from __future__ import annotations

import hashlib
import json
import sys

import torch

PAIRS = [{"prompt": f"What is {a} + {b}?", "chosen": f"<a>{a + b}</a>", "rejected": f"<a>{a + b + 1}</a>"}
         for a in range(4) for b in range(4)]


def length_reward(completion: str, task) -> float:
    """A reward a random model's samples differ on (so GRPO advantages are not all zero)."""
    return float(len(completion) % 5) / 4


def digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def record_gradients(trainer) -> dict:
    """Fill the returned dict with each parameter's gradient as the optimizer sees it (after the
    all-reduce and clipping), by name, at every update."""
    names = {id(p): n for n, p in trainer.unwrapped_model.named_parameters()}
    grads: dict = {}

    def pre_step(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and id(p) in names:
                    grads[names[id(p)]] = p.grad.detach().cpu().clone()

    trainer._prepare()
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper holds it
    inner.register_step_pre_hook(pre_step)
    return grads


def main(kind: str, model_dir: str, out: str, per_device: int) -> None:
    common = dict(output_dir=out, max_steps=1, learning_rate=1e-2, report_to="none", progress_bar=False,
                  lr_scheduler="constant", seed=0)
    if kind == "dpo":
        from trainers.config import DPOConfig
        from trainers.dpo import DPOTrainer

        trainer = DPOTrainer(model_dir, DPOConfig(per_device_train_batch_size=per_device, beta=0.1, **common),
                             train_dataset=PAIRS)
    elif kind == "grpo":
        from trainers import GRPOConfig, GRPOTrainer

        trainer = GRPOTrainer(model=model_dir, env="arithmetic-v0", verifiers=[length_reward],
                              config=GRPOConfig(num_prompts_per_step=2, group_size=4, max_new_tokens=8,
                                                temperature=1.0, eval_num_tasks=2, eval_max_new_tokens=4, **common))
    else:
        raise SystemExit(f"unknown kind {kind}")
    before = digest(trainer.unwrapped_model)
    grads = record_gradients(trainer)
    trainer.train()
    after = digest(trainer.unwrapped_model)
    weights = {k: v.detach().cpu() for k, v in trainer.unwrapped_model.state_dict().items()}
    rank = trainer.accelerator.process_index
    torch.save(weights, f"{out}/weights_rank{rank}.pt")
    torch.save(grads, f"{out}/grads_rank{rank}.pt")
    print("RESULT " + json.dumps({"kind": kind, "rank": rank, "world": trainer.accelerator.num_processes,
                                  "before": before, "after": after,
                                  "distributed_type": str(trainer.accelerator.distributed_type)}), flush=True)


if __name__ == "__main__":
    # kinds separated by commas run one after the other in the same processes (one launch)
    for k in sys.argv[1].split(","):
        main(k, sys.argv[2], f"{sys.argv[3]}/{k}", int(sys.argv[4]))

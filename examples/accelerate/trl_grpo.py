"""Our envs and verifiers inside TRL's ``GRPOTrainer``, at any scale (docs/scaling.md, "TRL at scale").

``env.as_dataset()`` is the train set in TRL's conversational format and ``env.as_reward_function()``
scores completions with the env's own verifiers; everything else is TRL's. On N machines × M GPUs
with a vLLM server on its own machine (started with TRL's documented command, see docs/scaling.md):

    accelerate launch --config_file examples/accelerate/multinode_zero3.yaml --machine_rank $NODE_RANK \\
        --main_process_ip $HEAD_IP examples/accelerate/trl_grpo.py --model Qwen/Qwen2.5-7B-Instruct \\
        --env gsm8k-v0 --vllm-server http://10.0.0.9:8000 --output-dir out/trl-gsm8k

Without ``--vllm-server`` TRL generates with ``model.generate`` (what the CPU smoke test runs).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The script's command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model folder or hub id")
    p.add_argument("--env", default="gsm8k-v0", help="a registered env id (rlenv envs lists them)")
    p.add_argument("--env-size", type=int, default=None, help="rows of the train set (required for procedural envs)")
    p.add_argument("--vllm-server", default=None, help="base URL of a vLLM server for generation (server mode)")
    p.add_argument("--output-dir", default="out/trl")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--per-device-batch", type=int, default=8)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=1e-6)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None):
    """Build TRL's GRPOTrainer on the env and train; returns the trainer."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    import rlenv

    args = parse_args(argv)
    env = rlenv.make(args.env)
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_batch, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, report_to="none", save_strategy="no",
        use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
        use_vllm=args.vllm_server is not None, vllm_mode="server", vllm_server_base_url=args.vllm_server)
    trainer = GRPOTrainer(model=args.model, reward_funcs=env.as_reward_function(), args=config,
                          train_dataset=env.as_dataset(args.env_size))
    trainer.train()
    return trainer


if __name__ == "__main__":
    main()

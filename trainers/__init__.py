"""Trainers: GRPO (and its variants), PPO, offline and online DPO, SFT and reward-model training,
all on one shared loop (:mod:`trainers.loop`), with configs in :mod:`trainers.config`.

    from trainers import SFTTrainer, SFTConfig
    SFTTrainer("preset:tiny", SFTConfig(output_dir="runs/sft", learning_rate=1e-3, max_steps=300),
               env="arithmetic-v0").train()

Trainer classes are imported lazily (``trainers.GRPOTrainer`` imports :mod:`trainers.grpo` on first
use), so ``import trainers`` is cheap and never fails because one trainer's optional dependency is
missing.
"""

from __future__ import annotations

import importlib

from .config import (DPOConfig, GRPOConfig, OnlineDPOConfig, PPOConfig, RewardConfig, RolloutConfig, SFTConfig,
                     TrainConfig)

_LAZY = {
    "BaseTrainer": "loop",
    "SFTTrainer": "sft",
    "DPOTrainer": "dpo",
    "RewardTrainer": "reward",
    "GRPOTrainer": "grpo",
    "PPOTrainer": "ppo",
    "OnlineDPOTrainer": "online_dpo",
    "run_spec": "pipeline",
}

__all__ = ["TrainConfig", "RolloutConfig", "SFTConfig", "RewardConfig", "DPOConfig", "GRPOConfig", "PPOConfig",
           "OnlineDPOConfig", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{module}":
            raise AttributeError(f"trainers.{name} is not available yet (trainers/{module}.py is missing)") from None
        raise
    value = getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

"""Trainers: GRPO (and its variants), PPO, offline and online DPO, SFT and reward-model training,
all on one shared loop (:mod:`trainers.loop`), with configs in :mod:`trainers.config`.

    from trainers import SFTTrainer, SFTConfig
    SFTTrainer("preset:tiny", SFTConfig(output_dir="runs/sft", learning_rate=1e-3, max_steps=300),
               env="arithmetic-v0").train()

The stage table (:mod:`trainers.stages`) names each trainer; ``trainers.GRPOTrainer`` is looked up
there and imports :mod:`trainers.grpo` on first use, so ``import trainers`` is cheap and never fails
because one trainer's optional dependency is missing.
"""

from __future__ import annotations

import importlib

from .config import (DPOConfig, GRPOConfig, LoggingConfig, LoraConfig, OnlineDPOConfig, PPOConfig, RewardConfig,
                     RolloutConfig, SFTConfig, TrainConfig)
from .stages import STAGES, StageSpec, register_stage

#: public names that are not a stage's trainer: name -> "module:attr"
_LAZY = {"BaseTrainer": "trainers.loop:BaseTrainer", "OnlineTrainer": "trainers.online:OnlineTrainer",
         "run_spec": "trainers.pipeline:run_spec"}
#: the built-in stages' trainer classes (SFTTrainer, GRPOTrainer, …), named by the stage table
_STAGE_TRAINERS = [s.trainer.rpartition(":")[2] for s in STAGES._table.values() if isinstance(s.trainer, str)]

__all__ = ["TrainConfig", "RolloutConfig", "SFTConfig", "RewardConfig", "DPOConfig", "GRPOConfig", "PPOConfig",
           "OnlineDPOConfig", "LoggingConfig", "LoraConfig", "STAGES", "StageSpec", "register_stage",
           *_LAZY, *_STAGE_TRAINERS]


def _target(name: str):
    if name in _LAZY:
        return _LAZY[name]
    for stage in STAGES.names():  # a stage's trainer, by its class name
        trainer = STAGES.get(stage).trainer
        if (trainer if isinstance(trainer, str) else f":{trainer.__name__}").rpartition(":")[2] == name:
            return trainer
    return None


def __getattr__(name: str):
    target = _target(name)
    if target is None:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr)
    else:
        value = target
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(__all__))

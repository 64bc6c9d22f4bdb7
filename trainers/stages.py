"""Training stages by name: the one table of what a run spec's ``stages`` may hold.

A stage kind is a :class:`StageSpec` — its config class, its trainer class, whether it generates
(samples from the policy with the engine, so it takes the spec's ``engine`` section) and whether it
produces the next policy or a reward model. Adding a trainer is one file (config and trainer) plus
one registration, here for a built-in or in your own module for yours::

    from trainers.stages import register_stage

    register_stage("kto", config=KTOConfig, trainer=KTOTrainer)          # classes, or
    register_stage("kto", config="my_pkg.kto:KTOConfig", trainer="my_pkg.kto:KTOTrainer")

A spec then runs it as ``- kto: {...}`` once the module is imported (list it under ``plugins:`` in
the spec, or expose it through the entry-point group ``rlenv.trainers``).

How the pipeline builds the trainer: ``TrainerClass.from_stage(model, config, run)`` when the class
defines it (``run`` is the :class:`StageRun`: the env, the curriculum, the latest reward model, …);
otherwise ``TrainerClass(model=model, config=config, env=run.env)`` — with ``curriculum=`` instead of
``env=`` for a generating stage of a spec with a curriculum.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Literal, Optional, Union

from .registry import Registry

__all__ = ["StageSpec", "StageRun", "STAGES", "register_stage", "get_stage"]


def _resolve(target: Union[type, str], what: str, stage: str) -> type:
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"stage `{stage}`: {what} {target!r} must be a class or 'package.module:Class'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"stage `{stage}`: cannot load its {what} {target!r} ({type(e).__name__}: {e})") from e


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One registered stage kind.

    Attributes:
        name: the key in a spec's ``stages`` list (``grpo``).
        config: the config class (a :class:`trainers.config.TrainConfig` subclass) or
            ``"module:Class"`` (imported on first use).
        trainer: the trainer class or ``"module:Class"`` (imported only when the stage runs).
        generates: True for online stages: the spec's ``engine`` section and sampling apply.
        produces: ``"policy"`` (the next stage starts from it) or ``"reward_model"`` (later stages
            with an unset ``reward_model`` use it; the policy stays).
        description: one line for listings.
    """

    name: str
    config: Union[type, str]
    trainer: Union[type, str]
    generates: bool = False
    produces: Literal["policy", "reward_model"] = "policy"
    description: str = ""

    def config_class(self) -> type:
        """The config class (imported when given as a string)."""
        return _resolve(self.config, "config", self.name)

    def trainer_class(self) -> type:
        """The trainer class (imported when given as a string)."""
        return _resolve(self.trainer, "trainer", self.name)


STAGES = Registry("stage", "Add one with trainers.stages.register_stage(name, config=..., trainer=...) in a "
                           "module the spec lists under `plugins:`.")
get_stage = STAGES.get


def register_stage(name: str, config: Union[type, str], trainer: Union[type, str], *, generates: bool = False,
                   produces: Literal["policy", "reward_model"] = "policy", description: str = "") -> StageSpec:
    """Register a stage kind (see the module docstring); returns its :class:`StageSpec`."""
    if produces not in ("policy", "reward_model"):
        raise ValueError(f"stage `{name}`: produces must be 'policy' or 'reward_model', got {produces!r}")
    spec = StageSpec(name, config, trainer, generates, produces, description)
    return STAGES.register(name, spec)


@dataclasses.dataclass
class StageRun:
    """What a stage of a spec gets from the run around it.

    Attributes:
        env: the spec's env (at the curriculum's first level when there is one).
        curriculum: the :class:`rlenv.curriculum.Curriculum`, or None.
        reward_model: the model folder of the latest reward-model stage, or None.
        seed: this stage's seed (the spec's seed + the stage's index).
        output_dir: this stage's folder.
    """

    env: Any
    output_dir: Path
    curriculum: Any = None
    reward_model: Optional[str] = None
    seed: int = 0

    def verifier_pairs(self, model: str, config: Any) -> list:
        """Verifier-labelled preference pairs of ``model`` on the env (a correct sample chosen over a
        wrong one; ``task.info["target"]`` stands in when a prompt has none right), as many as
        ``config``'s steps consume, saved to ``<output_dir>/pairs.jsonl``."""
        from .metrics_log import append_jsonl
        from .pairs import verifier_pairs

        per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
        wanted = per_step * config.max_steps if config.max_steps > 0 else 512
        pairs = verifier_pairs(model, self.env, num_prompts=min(2048, max(128, wanted)), samples_per_prompt=8,
                               max_new_tokens=config.eval_max_new_tokens, seed=self.seed, fallback_to_target=True)
        if not pairs:
            raise RuntimeError(f"no preference pairs: the model at {model} got every sampled prompt all right or "
                               f"all wrong; train an sft stage first or raise temperature")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "pairs.jsonl"
        if path.exists():
            path.unlink()
        append_jsonl(path, pairs)
        return pairs


# -- the built-in stages: one registration each ---------------------------------------------------------
from . import config as _c  # noqa: E402  (light: pydantic models only)

register_stage("sft", _c.SFTConfig, "trainers.sft:SFTTrainer",
               description="supervised fine-tuning on the env's ideal completions")
register_stage("rm", _c.RewardConfig, "trainers.reward:RewardTrainer", produces="reward_model",
               description="a reward model on verifier pairs of the current policy")
register_stage("dpo", _c.DPOConfig, "trainers.dpo:DPOTrainer",
               description="offline DPO on verifier pairs of the current policy")
register_stage("grpo", _c.GRPOConfig, "trainers.grpo:GRPOTrainer", generates=True,
               description="GRPO and its variants, online on the env")
register_stage("ppo", _c.PPOConfig, "trainers.ppo:PPOTrainer", generates=True,
               description="PPO with a value head, online on the env")
register_stage("online_dpo", _c.OnlineDPOConfig, "trainers.online_dpo:OnlineDPOTrainer", generates=True,
               description="online DPO on ranked samples of the current policy")

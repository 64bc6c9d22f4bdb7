"""``preference-v0``: any env's prompts, rewarded by a learned reward model.

    env = rlenv.make("preference-v0", reward_model="runs/demo/rm", base_env="arithmetic-v0")

The reward is the score of an ``AutoModelForSequenceClassification`` checkpoint (such as the one
``RewardTrainer`` writes) on (prompt, completion). The base env's own verifiers stay on as weight-0
metrics, so the pass rate is still measured — which is how one sees a policy exploit a reward model.
"""

from __future__ import annotations

from typing import Any, Optional

import rlenv
from rlenv.env import SingleTurnEnv
from verifiers.reward_model import RewardModelVerifier
from verifiers.rubric import Component, Rubric


class PreferenceEnv(SingleTurnEnv):
    """A :class:`SingleTurnEnv` whose ``info["correct"]`` comes from the base env's main verifier."""

    def __init__(self, tasks: Any, rubric: Rubric, correct_name: Optional[str], **kwargs):
        super().__init__(tasks, rubric, **kwargs)
        self.correct_name = correct_name

    def _score(self, completion: Any) -> tuple[float, dict]:
        reward, info = super()._score(completion)
        if self.correct_name is not None and not info["failed"]:
            info["correct"] = info["scores"].get(self.correct_name, 0.0) >= 1.0
        return reward, info


def make_env(reward_model: str, base_env: str = "arithmetic-v0", base_kwargs: Optional[dict] = None,
             normalize: Optional[str] = None, batch_size: int = 16, device: Optional[str] = None) -> PreferenceEnv:
    """Build the env from a reward-model checkpoint path and a registered base env."""
    base = rlenv.make(base_env, **(base_kwargs or {}))
    if not hasattr(base, "source") or not hasattr(base, "rubric"):
        raise ValueError(f"preference-v0: base_env {base_env!r} must be a task env (with .source and .rubric)")
    rm = RewardModelVerifier(reward_model, normalize=normalize, batch_size=batch_size, device=device)
    metrics = [Component(c.verifier, 0.0, name=c.name) for c in base.rubric.components if c.name != "reward_model"]
    main = next((c.name for c in base.rubric.components if c.weight != 0), None)
    rubric = Rubric([Component(rm, 1.0, name="reward_model")] + metrics)
    return PreferenceEnv(base.source, rubric, main, system_prompt=base.system_prompt, few_shot=base.few_shot)


rlenv.register("preference-v0", make_env,
               description="a base env's prompts rewarded by a learned reward model (base verifiers logged)")

"""``preference-v0``: any env's prompts, rewarded by a learned reward model.

    env = rlenv.make("preference-v0", reward_model="runs/demo/rm", base_env="arithmetic-v0")

The reward is the score of an ``AutoModelForSequenceClassification`` checkpoint (such as the one
``RewardTrainer`` writes) on (prompt, completion). The base env's own verifiers stay on as weight-0
metrics and still decide ``correct``, so the pass rate is still measured — which is how one sees a
policy exploit a reward model.
"""

from __future__ import annotations

from typing import Optional

import rlenv
from rlenv.env import SingleTurnEnv
from verifiers.reward_model import RewardModelVerifier
from verifiers.rubric import Component


def make_env(reward_model: str, base_env: str = "arithmetic-v0", base_kwargs: Optional[dict] = None,
             normalize: Optional[str] = None, batch_size: int = 16, device: Optional[str] = None) -> SingleTurnEnv:
    """Build the env from a reward-model checkpoint path and a registered base env."""
    base = rlenv.make(base_env, **(base_kwargs or {}))
    if not hasattr(base, "source") or not hasattr(base, "rubric"):
        raise ValueError(f"preference-v0: base_env {base_env!r} must be a task env (with .source and .rubric)")
    rm = RewardModelVerifier(reward_model, normalize=normalize, batch_size=batch_size, device=device)
    rubric = base.rubric.extended([Component(rm, 1.0, name="reward_model")], others_weight=0.0)
    return SingleTurnEnv(base.source, rubric, system_prompt=base.system_prompt, few_shot=base.few_shot)


rlenv.register("preference-v0", make_env,
               description="a base env's prompts rewarded by a learned reward model (base verifiers logged)")

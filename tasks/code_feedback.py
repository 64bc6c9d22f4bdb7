"""``code-feedback-v0``: the multi-turn code env — the sandbox's feedback comes back between attempts.

    env = rlenv.make("code-feedback-v0", max_turns=3)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("```python\\ndef f(x): return x\\n```")
    # failing tests: obs = [{"role": "user", "content": "Test 1 failed: ... Fix the code."}]

The episode ends when every test passes (``terminated``) or after ``max_turns`` attempts
(``truncated``); the reward is the tests verifier on the last attempt. Env turns stay in the
context but are masked out of the loss by rollout collection.
"""

from __future__ import annotations

from typing import Any, Optional

import rlenv
from rlenv.env import MultiTurnEnv
from tasks.code import SYSTEM_PROMPT, code_source, has_code_block
from verifiers.base import passes
from verifiers.code import CodeVerifier
from verifiers.rubric import Component, Rubric


class CodeFeedbackEnv(MultiTurnEnv):
    """Runs each attempt; a failing attempt gets the execution feedback as the next user turn."""

    def __init__(self, tasks: Any, verifier: CodeVerifier, **kwargs):
        self.verifier = verifier
        rubric = Rubric([Component(verifier, 1.0, name="tests"), Component(has_code_block, 0.0, name="format")])
        super().__init__(tasks, rubric, **kwargs)

    def env_response(self, messages: list, task: rlenv.Task) -> tuple[str, bool]:
        result = self.verifier.score(messages[-1]["content"], task)
        if passes(result.reward):
            return "", True
        feedback = result.details.get("feedback") or result.details.get("error") or "The tests failed."
        return f"{feedback}\nFix the code and reply with the whole corrected ```python code block.", False


def make_env(dataset: str = "mbpp", path: Optional[str] = None, hub: Optional[str] = None,
             config: Optional[str] = None, split: str = "test", max_turns: int = 3, timeout: float = 10.0,
             memory_mb: int = 512, system_prompt: str = SYSTEM_PROMPT, allow_weak_sandbox: bool = False,
             strict_types: Optional[bool] = None) -> CodeFeedbackEnv:
    """Build the env; ``max_turns`` attempts at most (the other arguments as ``code-v0``'s)."""
    return CodeFeedbackEnv(code_source(dataset, path, hub, config, split),
                           CodeVerifier(mode="all", timeout=timeout, memory_mb=memory_mb,
                                        allow_weak_sandbox=allow_weak_sandbox, strict_types=strict_types),
                           system_prompt=system_prompt, max_turns=max_turns)


rlenv.register("code-feedback-v0", make_env,
               description="multi-turn code: sandbox feedback between attempts until the tests pass")

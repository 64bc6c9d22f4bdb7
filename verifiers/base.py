"""The verifier protocol: what a reward function is and what it returns.

A verifier is either a plain function ``(completion, task) -> float`` (or ``-> VerifyResult``), or
an object with ``score(completion, task)`` and optionally ``score_batch(completions, tasks)``.
Either may be ``async``. A *group* verifier (``group = True``) sees all G completions of one prompt
at once through ``score_group(completions, task)``.

Every call goes through :func:`verifiers.isolation.call_verifier`, which turns an exception or a
timeout into a result with ``failed=True`` — an infrastructure failure the trainers mask out of the
loss — instead of a real 0 or a crashed run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Protocol, runtime_checkable

CORRECT = "correct"
INCORRECT = "incorrect"
PARTIAL = "partial"
FAILED = "failed"  # infrastructure: exception, timeout — not a judgement of the answer
NOT_APPLICABLE = "n/a"  # the verifier does not apply to this sample (masked, as TRL's None)

#: full credit: a score at or above it is a pass (see :func:`passes`)
PASS_REWARD = 1.0


def passes(reward: Any) -> Any:
    """The pass test, defined here once: a score is a pass when it reaches full credit
    (``reward >= PASS_REWARD``). It turns a verifier's number into the ``correct`` verdict, the
    rubric's main component into ``ScoreResult.correct``, and — for an env that reports no
    ``correct`` — a rollout's reward into ``RolloutBatch.correct``, which every pass rate (eval,
    curriculum, metrics) reads. Works on a float or elementwise on a tensor of rewards."""
    return reward >= PASS_REWARD


@dataclasses.dataclass
class VerifyResult:
    """One verifier's judgement of one completion.

    Attributes:
        reward: the score (usually in [0, 1]); 0.0 when failed.
        verdict: one of ``correct``, ``incorrect``, ``partial``, ``failed``, ``n/a``.
        details: anything useful in the logs (the parsed answer, test output, the error).
    """

    reward: float
    verdict: str = INCORRECT
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True for infrastructure failures (exception, timeout) — distinct from a wrong answer."""
        return self.verdict == FAILED

    @property
    def applicable(self) -> bool:
        return self.verdict != NOT_APPLICABLE

    @classmethod
    def from_value(cls, value: Any) -> "VerifyResult":
        """Normalise what a user's verifier returned: a float, a bool, None or a VerifyResult."""
        if isinstance(value, VerifyResult):
            return value
        if value is None:
            return cls(0.0, NOT_APPLICABLE)
        if isinstance(value, bool):
            return cls(float(value), CORRECT if value else INCORRECT)
        try:
            r = float(value)
        except (TypeError, ValueError):
            return cls(0.0, FAILED, {"error": f"verifier returned {type(value).__name__}, expected a number"})
        if r != r:  # NaN
            return cls(0.0, FAILED, {"error": "verifier returned NaN"})
        verdict = CORRECT if passes(r) else INCORRECT if r <= 0.0 else PARTIAL
        return cls(r, verdict)

    @classmethod
    def failure(cls, error: str) -> "VerifyResult":
        return cls(0.0, FAILED, {"error": error})


class PreflightError(RuntimeError):
    """A verifier cannot run safely on this machine (e.g. the code sandbox has no isolation here).

    Raised by a verifier's optional ``preflight()`` — which ``Rubric.preflight()`` and the envs call,
    and ``rlenv train`` / ``rlenv eval`` before the first step — so a run stops at once with one
    message naming the fix instead of masking every sample.
    """


@runtime_checkable
class Verifier(Protocol):
    """A class-style verifier. ``score_batch`` and ``score_group`` are optional."""

    name: str

    def score(self, completion: str, task: Any) -> Any:  # pragma: no cover - protocol
        ...


def verifier_name(v: Any) -> str:
    """A readable name for a verifier object or function (used as the key in ``info['scores']``)."""
    name = getattr(v, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(v, "__name__", None)
    if isinstance(name, str) and name and name != "<lambda>":
        return name
    return type(v).__name__


def completion_text(completion: Any) -> str:
    """Completions may arrive as a string or as chat messages; verifiers usually want the text of
    the last assistant turn."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        for m in reversed(completion):
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant":
                return str(m.get("content", ""))
        return ""
    return "" if completion is None else str(completion)


@dataclasses.dataclass
class ScoreResult:
    """The combined judgement of an env's rubric for one completion.

    ``reward`` is the weighted total; ``components`` maps each verifier name to its own reward
    (weight-0 metrics included); ``failed`` is True when a rewarded component failed, so the sample
    should be masked out of the loss.
    """

    reward: float
    components: dict
    failed: bool = False
    verdicts: dict = dataclasses.field(default_factory=dict)
    details: dict = dataclasses.field(default_factory=dict)
    correct: Optional[bool] = None

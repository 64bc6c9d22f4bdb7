"""Verifiers: the reward side of RL from verifiable rewards.

A verifier is a plain function ``(completion, task) -> float`` (or ``-> VerifyResult`` / ``None``
for "not applicable"), or a class with ``score`` / ``score_batch`` / ``score_group``, sync or async.
A :class:`Rubric` composes verifiers (weights, gates, weight-0 metrics) and runs every call under a
hard time limit (:mod:`verifiers.isolation`).

Writing a plugin::

    import verifiers

    @verifiers.register("ends_with_period")
    def ends_with_period(completion, task):
        return float(completion.rstrip().endswith("."))

    rubric = verifiers.Rubric(["ends_with_period"])

``import verifiers`` is light: the built-ins (``math``, ``code``, ``reward_model``, ``format``) are
imported when first used, and a failure in one does not break the others.
"""

from __future__ import annotations

import importlib

from .base import (CORRECT, FAILED, INCORRECT, NOT_APPLICABLE, PARTIAL, ScoreResult, Verifier,
                   VerifyResult, completion_text, verifier_name)
from .isolation import FAILURES, FailureCounter, call_verifier
from .registry import (VerifierNotFoundError, VerifierSpec, get, list_verifiers, pprint_registry, register,
                       spec, unregister)
from .rubric import Component, Rubric, score_metrics
from .trl_compat import from_trl, to_trl_reward

__all__ = [
    "VerifyResult", "ScoreResult", "Verifier", "CORRECT", "INCORRECT", "PARTIAL", "FAILED", "NOT_APPLICABLE",
    "completion_text", "verifier_name",
    "Rubric", "Component", "score_metrics",
    "register", "unregister", "get", "spec", "list_verifiers", "pprint_registry", "VerifierSpec",
    "VerifierNotFoundError",
    "call_verifier", "FailureCounter", "FAILURES",
    "from_trl", "to_trl_reward", "RewardModelVerifier",
]

# heavy or optional parts load on first access, so one failing import never breaks the package
_LAZY = {"RewardModelVerifier": ("verifiers.reward_model", "RewardModelVerifier")}
_SUBMODULES = ("math", "code", "format", "reward_model", "isolation", "registry", "rubric", "trl_compat",
               "trl_in", "workers")


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'verifiers' has no attribute {name!r}")

"""Composition of verifiers into one reward: weighted sums, gates and weight-0 metrics.

(First version: sequential, no isolation. The verifiers issue replaces the call path with
:func:`verifiers.isolation.call_verifier` — time limits, failure marking, batching, pools.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from .base import FAILED, NOT_APPLICABLE, ScoreResult, VerifyResult, completion_text, verifier_name


@dataclasses.dataclass
class Component:
    """One verifier inside a :class:`Rubric`.

    ``weight`` 0 makes it a logged metric that is not rewarded. ``gate`` names another component
    that must score ≥ ``gate_threshold`` for this one to count ("correctness counts only if the
    format holds").
    """

    verifier: Any
    weight: float = 1.0
    name: Optional[str] = None
    gate: Optional[str] = None
    gate_threshold: float = 1.0

    def __post_init__(self):
        if self.name is None:
            self.name = verifier_name(self.verifier)


class Rubric:
    """A weighted set of verifiers. ``score(completion, task) -> ScoreResult``."""

    def __init__(self, components: Sequence[Any]):
        comps = []
        for c in components:
            if isinstance(c, Component):
                comps.append(c)
            elif isinstance(c, tuple):
                comps.append(Component(c[0], float(c[1])))
            else:
                comps.append(Component(c))
        names = [c.name for c in comps]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"Rubric has two components named {sorted(dup)}; give them distinct `name=`s")
        for c in comps:
            if c.gate is not None and c.gate not in names:
                raise ValueError(f"Rubric component {c.name!r} is gated on unknown component {c.gate!r}; "
                                 f"known: {names}")
        self.components = comps

    def _call(self, comp: Component, completion: Any, task: Any) -> VerifyResult:
        v = comp.verifier
        try:
            fn = v.score if hasattr(v, "score") else v
            return VerifyResult.from_value(fn(completion_text(completion), task))
        except Exception as e:  # a broken verifier costs one sample's reward, never the run
            return VerifyResult.failure(f"{type(e).__name__}: {e}")

    def combine(self, results: dict) -> ScoreResult:
        """Weighted total of already computed component results (name -> VerifyResult)."""
        total, failed = 0.0, False
        comps = {}
        for c in self.components:
            r = results[c.name]
            comps[c.name] = r.reward
            if c.weight == 0 or r.verdict == NOT_APPLICABLE:
                continue
            if r.verdict == FAILED:
                failed = True
                continue
            if c.gate is not None and results[c.gate].reward < c.gate_threshold:
                continue
            total += c.weight * r.reward
        verdicts = {k: r.verdict for k, r in results.items()}
        details = {k: r.details for k, r in results.items() if r.details}
        first = self.components[0].name if self.components else None
        correct = None if first is None else results[first].reward >= 1.0
        return ScoreResult(total, comps, failed, verdicts, details, correct)

    def score(self, completion: Any, task: Any) -> ScoreResult:
        return self.combine({c.name: self._call(c, completion, task) for c in self.components})

    def score_batch(self, completions: Sequence[Any], tasks: Sequence[Any]) -> list[ScoreResult]:
        return [self.score(c, t) for c, t in zip(completions, tasks)]

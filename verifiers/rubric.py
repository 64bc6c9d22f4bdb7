"""Composition of verifiers into one reward: weighted sums, gates and weight-0 metrics.

>>> from verifiers.rubric import Rubric, Component
>>> rubric = Rubric([
...     Component(think_answer_format, weight=0.2, name="format"),
...     Component(correct_answer, weight=1.0, gate="format"),   # counts only if the format holds
...     Component(length_in_chars, weight=0.0),                  # logged, not rewarded
... ])                                                            # doctest: +SKIP
>>> rubric.score_batch(completions, tasks)                        # doctest: +SKIP

A component's verifier may be a function ``(completion, task)``, a class with ``score`` and/or
``score_batch(completions, tasks)``, a *group* verifier (``score_group(completions, task)``, or a
function with ``group = True``) that sees all completions of one prompt, a TRL reward function
(``fn(prompts, completions, **columns)``), a registered name, and any of them ``async``.

Every call goes through :mod:`verifiers.isolation`: all components of a whole batch run
concurrently on a thread pool with per-call deadlines (``heavy`` verifiers in killable worker
processes). A verifier that raises or hangs yields a ``failed`` result; a sample whose reward
depends on a failed component has ``ScoreResult.failed = True`` so trainers mask it out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from .base import FAILED, NOT_APPLICABLE, ScoreResult, VerifyResult, completion_text, passes, verifier_name
from .isolation import (DEFAULT_BATCH_CALL_TIMEOUT, DEFAULT_TIMEOUT, Call, FailureCounter, failure_result,
                        in_process, outcome, pickled, run_calls)
from .trl_in import from_trl, is_trl_reward_function

__all__ = ["Component", "Rubric", "score_metrics"]

_ISOLATION = (None, "thread", "process")


@dataclasses.dataclass
class Component:
    """One verifier inside a :class:`Rubric`.

    Attributes:
        verifier: a function, a class instance, a TRL reward function or a registered name.
        weight: its weight in the total; ``0`` makes it a logged metric that is not rewarded.
        name: its key in ``ScoreResult.components`` (default: the verifier's name).
        gate: the name of another component that must score ≥ ``gate_threshold`` for this one to
            count ("correctness counts only if the format holds").
        gate_threshold: see ``gate``.
        timeout: seconds one call may take — one sample, or one whole ``score_batch`` /
            ``score_group`` call (default: the verifier's ``call_timeout`` attribute, else the
            rubric's ``timeout`` for per-sample calls and ``batch_call_timeout`` for the others).
            A verifier's own ``timeout`` attribute is its business (e.g. seconds per math pair)
            and is not read here.
        isolation: ``"thread"`` or ``"process"``; default ``"process"`` when the verifier declares
            ``heavy = True`` (CPU-bound code that may loop forever: only a process can be killed).
    """

    verifier: Any
    weight: float = 1.0
    name: Optional[str] = None
    gate: Optional[str] = None
    gate_threshold: float = 1.0
    timeout: Optional[float] = None
    isolation: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.verifier, str):  # a registered name: it is also the component's name
            from .registry import get

            self.name = self.name or self.verifier
            self.verifier = get(self.verifier)
        elif is_trl_reward_function(self.verifier):
            self.verifier = from_trl(self.verifier)
        if self.name is None:
            self.name = verifier_name(self.verifier)
        if self.isolation not in _ISOLATION:
            raise ValueError(f"Component {self.name!r}: isolation must be 'thread' or 'process', "
                             f"got {self.isolation!r}")
        try:
            self.weight = float(self.weight)
        except (TypeError, ValueError):
            raise TypeError(f"Component {self.name!r}: weight must be a number, got {self.weight!r}") from None
        self.mode, self.fn = _call_shape(self.verifier, self.name)
        if self.heavy:
            pickled(self.fn)  # fail now, with a clear message, not once per sample later

    @property
    def heavy(self) -> bool:
        """True when calls run in a worker process."""
        if self.isolation is not None:
            return self.isolation == "process"
        return bool(getattr(self.verifier, "heavy", False))


def _call_shape(v: Any, name: str) -> tuple[str, Any]:
    """How to call ``v``: ``("group", fn)``, ``("batch", fn)`` or ``("sample", fn)``."""
    if callable(getattr(v, "score_group", None)):
        return "group", v.score_group
    if getattr(v, "group", False) is True and callable(v):
        return "group", v
    if callable(getattr(v, "score_batch", None)):
        return "batch", v.score_batch
    if callable(getattr(v, "score", None)):
        return "sample", v.score
    if callable(v):
        return "sample", v
    raise TypeError(f"Component {name!r}: a verifier must be a function (completion, task) -> float or "
                    f"an object with score()/score_batch()/score_group(), got {type(v).__name__}")


def _group_indices(tasks: Sequence[Any]) -> list[list[int]]:
    """Indices of the samples that share one prompt, in first-seen order (the same Task object, or
    tasks with the same id and prompt)."""
    groups: dict = {}
    for i, t in enumerate(tasks):
        tid = getattr(t, "id", None)
        key = ("id", tid, repr(getattr(t, "prompt", None))) if tid is not None else ("obj", id(t))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class Rubric:
    """A weighted set of verifiers. ``score(completion, task) -> ScoreResult``.

    Args:
        components: :class:`Component` s, ``(verifier, weight)`` pairs, or bare verifiers (weight 1).
        timeout: default seconds per per-sample verifier call.
        batch_call_timeout: default seconds for one ``score_batch``/``score_group`` call of a
            verifier (it covers many samples; verifiers such as ``math`` and ``code`` also enforce
            their own per-item limits inside it).
        batch_timeout: optional limit in seconds for a whole :meth:`score_batch`; calls still
            pending then are marked failed.
        correct: the name of the component whose score decides ``ScoreResult.correct`` (through
            :func:`verifiers.base.passes`); default: the first rewarded component.
    """

    def __init__(self, components: Sequence[Any], *, timeout: float = DEFAULT_TIMEOUT,
                 batch_call_timeout: float = DEFAULT_BATCH_CALL_TIMEOUT, batch_timeout: Optional[float] = None,
                 correct: Optional[str] = None):
        comps = []
        for c in components:
            if isinstance(c, Component):
                comps.append(c)
            elif isinstance(c, tuple):
                comps.append(Component(c[0], *c[1:]))
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
            if c.gate == c.name:
                raise ValueError(f"Rubric component {c.name!r} cannot gate itself")
        if correct is not None and correct not in names:
            raise ValueError(f"Rubric(correct={correct!r}) names no component; known: {names}")
        self.components = comps
        # the component whose verdict says "correct": the named one, else the first rewarded one
        self._main = correct or next((c.name for c in comps if c.weight != 0), comps[0].name if comps else None)
        self.timeout = timeout
        self.batch_call_timeout = batch_call_timeout
        self.batch_timeout = batch_timeout
        #: failures of this rubric's verifiers (also counted in verifiers.isolation.FAILURES)
        self.failures = FailureCounter()

    @property
    def names(self) -> list[str]:
        """Component names, in order."""
        return [c.name for c in self.components]

    @property
    def correct_component(self) -> Optional[str]:
        """The name of the component whose score decides ``ScoreResult.correct``."""
        return self._main

    def extended(self, components: Sequence[Any], *, others_weight: Optional[float] = None) -> "Rubric":
        """A new rubric: this one's components plus ``components`` (e.g. a reward model that a
        trainer adds), with the same limits. ``others_weight=0.0`` turns this rubric's own components
        into logged metrics, so the added ones alone make the reward. Either way ``correct`` stays
        with this rubric's deciding component, so the pass rate still measures the task."""
        own = list(self.components)
        if others_weight is not None:
            own = [dataclasses.replace(c, weight=float(others_weight)) for c in own]
        return Rubric(own + list(components), timeout=self.timeout, batch_call_timeout=self.batch_call_timeout,
                      batch_timeout=self.batch_timeout, correct=self._main)

    def preflight(self) -> None:
        """Before a run's first step, let each verifier that has a ``preflight()`` check it can work
        here (the code sandbox: that isolation is available); raises its ``PreflightError``."""
        for c in self.components:
            check = getattr(c.verifier, "preflight", None)
            if callable(check):
                check()

    def _limit(self, c: Component) -> Optional[float]:
        if c.timeout is not None:
            return c.timeout
        t = getattr(c.verifier, "call_timeout", None)
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return float(t)
        return self.timeout if c.mode == "sample" else self.batch_call_timeout

    def _caller(self, c: Component):
        """A function args -> Call for component ``c`` (limits resolved once per batch)."""
        limit = self._limit(c)
        if c.heavy:  # the process runner enforces the limit itself (and kills the worker)
            run = in_process(c.fn, limit)
            return lambda args: Call(run, args, None)
        fn = c.fn
        return lambda args: Call(fn, args, limit)

    def score_batch(self, completions: Sequence[Any], tasks: Sequence[Any]) -> list[ScoreResult]:
        """Score ``completions[i]`` against ``tasks[i]`` for all i, every component concurrently.

        Never raises because of a verifier and never waits longer than the per-call limits (or
        ``batch_timeout``); failed calls give ``failed`` results.
        """
        n = len(completions)
        if len(tasks) != n:
            raise ValueError(f"score_batch got {n} completions but {len(tasks)} tasks; pass one task "
                             f"per completion (repeat a task for the G samples of a group)")
        texts = [completion_text(c) for c in completions]
        tasks = list(tasks)
        plans, calls = [], []
        groups = None
        for c in self.components:
            make = self._caller(c)
            if c.mode == "sample":
                cover = None
                cs = [make((texts[i], tasks[i])) for i in range(n)]
            elif c.mode == "batch":
                cover = [list(range(n))] if n else []
                cs = [make((texts, tasks))] if n else []
            else:
                groups = groups if groups is not None else _group_indices(tasks)
                cover = groups
                cs = [make(([texts[i] for i in g], tasks[g[0]])) for g in groups]
            plans.append((c, cs, cover))
            calls.extend(cs)
        run_calls(calls, self.batch_timeout)
        names = [c.name for c, _, _ in plans]
        columns = [self._collect(c, cs, cover, n) for c, cs, cover in plans]
        return [self.combine(dict(zip(names, row))) for row in zip(*columns)] if columns else \
            [self.combine({}) for _ in range(n)]

    def _collect(self, c: Component, calls: list, cover: Optional[list], n: int) -> list:
        if cover is None:  # one call per sample
            return [outcome(call, c.name, self.failures) for call in calls]
        out: list = [None] * n
        for call, idx in zip(calls, cover):
            if not call.ok:
                fail = outcome(call, c.name, self.failures)  # counts one; count the rest of the group
                if len(idx) > 1:
                    failure_result(c.name, fail.details.get("failure", "exception"), fail.details["error"],
                                   self.failures, n=len(idx) - 1)
                for i in idx:
                    out[i] = fail
                continue
            values = call.value
            try:
                values = list(values)
            except TypeError:
                values = None
            if values is None or len(values) != len(idx):
                got = "a non-list" if values is None else f"{len(values)} values"
                fail = failure_result(c.name, "exception", f"{c.mode} verifier returned {got} for {len(idx)} "
                                      f"completions; return one score per completion", self.failures, len(idx))
                for i in idx:
                    out[i] = fail
                continue
            for i, v in zip(idx, values):
                r = VerifyResult.from_value(v)
                out[i] = failure_result(c.name, "exception", r.details.get("error", ""), self.failures) if r.failed else r
        return out

    def score(self, completion: Any, task: Any) -> ScoreResult:
        """Score one completion (see :meth:`score_batch`)."""
        return self.score_batch([completion], [task])[0]

    def score_group(self, completions: Sequence[Any], task: Any) -> list[ScoreResult]:
        """Score the G completions of one prompt (group verifiers see them together)."""
        return self.score_batch(completions, [task] * len(completions))

    def combine(self, results: dict) -> ScoreResult:
        """Weighted total of already computed component results (name -> VerifyResult).

        Weight-0 components and ``n/a`` verdicts add nothing; a gated component adds only when its
        gate scored ≥ its threshold; a failed component that would have counted marks the whole
        sample failed (masked out of the loss) instead of silently counting as 0.
        """
        total, failed = 0.0, False
        comps, verdicts, details = {}, {}, {}
        for c in self.components:
            name = c.name
            r = results[name]
            comps[name], verdicts[name] = r.reward, r.verdict
            if r.details:
                details[name] = r.details
            if c.weight == 0 or r.verdict == NOT_APPLICABLE:
                continue
            if r.verdict == FAILED:
                failed = True
                continue
            if c.gate is not None:
                g = results[c.gate]
                if g.verdict == FAILED:
                    failed = True
                    continue
                if g.verdict != NOT_APPLICABLE and g.reward < c.gate_threshold:
                    continue
            total += c.weight * r.reward
        correct = None
        m = results.get(self._main) if self._main is not None else None
        if m is not None and m.verdict not in (FAILED, NOT_APPLICABLE):
            correct = bool(passes(m.reward))
        return ScoreResult(float(total), comps, failed, verdicts, details, correct)

    def __repr__(self) -> str:
        parts = [f"{c.name}×{c.weight:g}" + (f"[gate={c.gate}]" if c.gate else "") for c in self.components]
        return f"Rubric({', '.join(parts)})"


def score_metrics(results: Sequence[ScoreResult], prefix: str = "rewards/") -> dict:
    """Per-component means for the training logs: ``{prefix+name: mean}`` over the samples where
    that component neither failed nor was n/a, plus ``{prefix}total`` and the failed fraction."""
    if not results:
        return {}
    out: dict = {}
    names = list(results[0].components)
    for name in names:
        vals = [r.components[name] for r in results
                if r.verdicts.get(name) not in ("failed", "n/a") and name in r.components]
        if vals:
            out[prefix + name] = sum(vals) / len(vals)
    ok = [r.reward for r in results if not r.failed]
    if ok:
        out[prefix + "total"] = sum(ok) / len(ok)
    out[prefix + "failed_frac"] = sum(r.failed for r in results) / len(results)
    return out

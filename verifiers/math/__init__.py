"""Math answer verification: extract, normalise, parse to sympy, decide equivalence — never hang.

>>> from verifiers.math import is_equivalent
>>> is_equivalent(r"\\frac{1}{2}", "0.5")
True
>>> is_equivalent("(1, 2)", r"The answer is $\\boxed{(2, 1)}$")
False

:func:`is_equivalent` answers trivially decidable pairs (same text after normalisation, two plain
numbers) in-process; everything else is parsed and compared in a persistent worker process under
a hard wall-clock limit (see :mod:`verifiers.workers`), so it works from any thread and any
process and a hostile answer (``9**9**9**9``) costs at most ``timeout`` seconds and a ``False``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import threading
from fractions import Fraction
from typing import Any, Iterable, Optional, Sequence

from ..base import CORRECT, INCORRECT, NOT_APPLICABLE, VerifyResult, completion_text
from .extract import extract_answer
from .normalize import normalize
from ..workers import WorkerPool
from .structure import MAX_ANSWER_CHARS

__all__ = ["is_equivalent", "is_equivalent_batch", "extract_answer", "normalize", "MathVerifier",
           "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 1.5  # seconds per pair; the done-when target is < 2 s for any pair
_NUMBER = re.compile(r"^-?(?:\d{1,400}(?:\.\d{0,400})?|\.\d{1,400})$")
_pools: dict = {}
_pools_lock = threading.Lock()


def _pool(n: int) -> WorkerPool:
    with _pools_lock:
        p = _pools.get(n)
        if p is None:
            p = _pools[n] = WorkerPool("verifiers.math.compare:judge", n)
        return p


def _answer(s: Any) -> Optional[str]:
    if not isinstance(s, str):
        s = "" if s is None else str(s)
    try:
        return extract_answer(s)
    except Exception:  # noqa: BLE001 - never raise on any string
        return None


def _fast(g: str, p: str) -> Optional[bool]:
    """Decide normalised answers in-process when it is trivial; ``None`` means "ask a worker"."""
    if g == p and g:
        return True
    if _NUMBER.match(g) and _NUMBER.match(p):
        a, b = Fraction(g), Fraction(p)
        if a == b:
            return True
        if "." not in g and "." not in p:
            return False  # two different integers
        # the same tolerance as the worker's (compare.REL_TOL, plus 1e-12 absolute near zero)
        return abs(a - b) <= Fraction(1, 10**6) * max(abs(a), abs(b)) or abs(a - b) <= Fraction(1, 10**12)
    return None


def is_equivalent(gold: str, pred: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when ``pred`` states the same final answer as ``gold``.

    Both may be bare answers (``"3/4"``) or whole solutions (the final answer is extracted: last
    ``\\boxed{}``, ``<answer>`` tags, ``####``, "the final answer is", last number). Never raises;
    returns ``False`` for a missing answer and for a comparison that runs past ``timeout`` seconds.
    """
    return is_equivalent_batch([(gold, pred)], timeout=timeout, workers=1)[0]


def is_equivalent_batch(pairs: Iterable[Sequence[str]], timeout: float = DEFAULT_TIMEOUT,
                        workers: Optional[int] = None) -> list[bool]:
    """:func:`is_equivalent` for many ``(gold, pred)`` pairs, on a pool of ``workers`` persistent
    processes (default: the number of CPUs, at most 4). Each pair gets ``timeout`` seconds; parsed
    gold answers are cached inside each worker, so many completions per gold answer are cheap."""
    pairs = list(pairs)
    out: list = [False] * len(pairs)
    jobs, where = [], []
    for k, pair in enumerate(pairs):
        try:
            gold, pred = pair
        except (TypeError, ValueError):
            continue
        g, p = _answer(gold), _answer(pred)
        if not g or not p:
            continue
        try:
            gn, pn = normalize(g), normalize(p)
        except Exception:  # noqa: BLE001 - never raise on any string
            continue
        if len(gn) > MAX_ANSWER_CHARS or len(pn) > MAX_ANSWER_CHARS:
            out[k] = gn == pn  # no real final answer is this long; do not parse it
            continue
        fast = _fast(gn, pn)
        if fast is not None:
            out[k] = fast
            continue
        jobs.append((g, p))
        where.append(k)
    if jobs:
        for k, r in zip(where, _run_jobs(jobs, timeout, workers)):
            out[k] = bool(r is True)
    return out


def _run_jobs(jobs: list, timeout: float, workers: Optional[int]) -> list:
    """Compare in the worker pool; inside a daemonic process (which may not have children, e.g. a
    ``verifiers.workers.WorkerPool`` worker — itself killed on overrun) compare in-process."""
    if mp.current_process().daemon:
        from .compare import judge

        out = []
        for g, p in jobs:
            try:
                out.append(judge(g, p))
            except Exception:  # noqa: BLE001 - never raise on any string
                out.append(False)
        return out
    n = workers or min(4, os.cpu_count() or 1)
    try:
        return _pool(n).map(jobs, timeout=timeout, on_timeout=False)
    except Exception:  # noqa: BLE001 - e.g. no processes left: a failed comparison is a False, not a crash
        return [False] * len(jobs)


class MathVerifier:
    """Reward 1.0 when the completion's final answer equals ``task.answer`` (the gold answer).

    ``details`` holds the extracted answer; a completion with no answer is a plain 0 (incorrect),
    and a task without a gold answer is ``n/a``.
    """

    name = "math"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, workers: Optional[int] = None):
        self.timeout = timeout
        self.workers = workers

    def score(self, completion: Any, task: Any) -> VerifyResult:
        """Score one completion against ``task.answer``."""
        return self.score_batch([completion], [task])[0]

    def score_batch(self, completions: Sequence[Any], tasks: Sequence[Any]) -> list[VerifyResult]:
        """Score many completions at once in the worker pool."""
        texts = [completion_text(c) for c in completions]
        golds = [getattr(t, "answer", t) for t in tasks]
        ok = is_equivalent_batch(list(zip([("" if g is None else str(g)) for g in golds], texts)),
                                 timeout=self.timeout, workers=self.workers)
        results = []
        for text, gold, good in zip(texts, golds, ok):
            if gold is None:
                results.append(VerifyResult(0.0, NOT_APPLICABLE, {"error": "task has no answer"}))
                continue
            details = {"extracted": _answer(text), "gold": str(gold)}
            results.append(VerifyResult(1.0 if good else 0.0, CORRECT if good else INCORRECT, details))
        return results


from ..registry import register as _register  # noqa: E402 - after the class it registers

_register("math", MathVerifier)

"""Math answer verification: extract, normalise, parse to sympy, decide equivalence — never hang.

>>> from verifiers.math import is_equivalent
>>> is_equivalent(r"\\frac{1}{2}", "0.5")
True
>>> is_equivalent("(1, 2)", r"The answer is $\\boxed{(2, 1)}$")
False
>>> is_equivalent("72", "Total: 72")
True
>>> is_equivalent(r"\\frac{8}{3}", "2.67", precision=2)
True

:func:`is_equivalent` answers trivially decidable pairs (same text after normalisation, two plain
numbers) in-process; everything else is parsed and compared in a persistent worker process under
a hard wall-clock limit (see :mod:`verifiers.workers`), so it works from any thread and any
process and a hostile answer (``9**9**9**9``) costs at most ``timeout`` seconds and a ``False``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import threading
from fractions import Fraction
from typing import Any, Iterable, Optional, Sequence

from ..base import CORRECT, INCORRECT, NOT_APPLICABLE, VerifyResult, completion_text
from .extract import extract_answer, extract_choice, is_choice
from .normalize import normalize
from .numbers import DEFAULT_PRECISION, check_precision, fractions_agree
from ..workers import WorkerPool
from .structure import MAX_ANSWER_CHARS

__all__ = ["is_equivalent", "is_equivalent_batch", "extract_answer", "normalize", "MathVerifier",
           "DEFAULT_TIMEOUT", "DEFAULT_PRECISION"]

DEFAULT_TIMEOUT = 1.5  # seconds per pair; the done-when target is < 2 s for any pair
_NUMBER = re.compile(r"^-?(?:\d{1,400}(?:\.\d{0,400})?|\.\d{1,400})$")
_PERCENT = re.compile(r"%|percent|pct")
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


def _fast(g: str, p: str, precision: int) -> Optional[bool]:
    """Decide normalised answers in-process when it is trivial; ``None`` means "ask a worker"."""
    if g == p and g:
        return True
    if _NUMBER.match(g) and _NUMBER.match(p):
        # the worker's rule (verifiers.math.numbers), on exact rationals
        return fractions_agree(Fraction(g), Fraction(p), "." in g or "." in p, precision)
    return None


def _text_of(s: Any) -> str:
    return s if isinstance(s, str) else ("" if s is None else str(s))


def _answers(gold: Any, pred: Any) -> tuple:
    """Both final answers; when one is a choice letter (``C``), the other is read as a choice too
    (``"C. Because …"``, ``"(c)"``) if its plain reading is not already one."""
    g, p = _answer(gold), _answer(pred)
    try:
        gc, pc = bool(g) and is_choice(normalize(g)), bool(p) and is_choice(normalize(p))
        if gc and not pc:
            p = extract_choice(_text_of(pred)) or p
        elif pc and not gc:
            g = extract_choice(_text_of(gold)) or g
    except Exception:  # noqa: BLE001 - never raise on any string
        pass
    return g, p


def is_equivalent(gold: str, pred: str, timeout: float = DEFAULT_TIMEOUT, precision: Optional[int] = None,
                  strict: bool = True) -> bool:
    """True when ``pred`` states the same final answer as ``gold``.

    Both may be bare answers (``"3/4"``) or whole solutions (the final answer is extracted: last
    ``\\boxed{}``, ``<answer>`` tags, ``####``, "the final answer is", an answer introduced by a word
    such as ``Total: 42``, the last number). Never raises on any input; returns ``False`` for a
    missing answer and for a comparison that runs past ``timeout`` seconds.

    ``precision`` (decimal places, default ``None`` = 6): a decimal answer equals a number when the
    two agree to that many places, like math-verify's ``float_rounding`` (``precision=2``: ``2.67``
    equals ``8/3``). Exact numbers are always compared exactly. ``strict`` (default ``True``):
    variable names must match; ``strict=False`` accepts the same answer in renamed variables
    (``f(x)`` and ``f(y)``). A bad ``precision`` raises ``ValueError`` (it is the caller's setting,
    not an answer).
    """
    return is_equivalent_batch([(gold, pred)], timeout=timeout, workers=1, precision=precision, strict=strict)[0]


def is_equivalent_batch(pairs: Iterable[Sequence[str]], timeout: float = DEFAULT_TIMEOUT,
                        workers: Optional[int] = None, precision: Optional[int] = None,
                        strict: bool = True) -> list[bool]:
    """:func:`is_equivalent` for many ``(gold, pred)`` pairs, on a pool of ``workers`` persistent
    processes (default: the number of CPUs, at most 4). Each pair gets ``timeout`` seconds; parsed
    gold answers are cached inside each worker, so many completions per gold answer are cheap."""
    places = check_precision(precision)
    strict = bool(strict)
    pairs = list(pairs)
    out: list = [False] * len(pairs)
    jobs, where = [], []
    for k, pair in enumerate(pairs):
        try:
            gold, pred = pair
        except (TypeError, ValueError):
            continue
        g, p = _answers(gold, pred)
        if not g or not p:
            continue
        try:
            gn, pn = normalize(g), normalize(p)
        except Exception:  # noqa: BLE001 - never raise on any string
            continue
        if len(gn) > MAX_ANSWER_CHARS or len(pn) > MAX_ANSWER_CHARS:
            out[k] = gn == pn  # no real final answer is this long; do not parse it
            continue
        # a percentage is compared in the worker (28% is 28 and 0.28, which normalising hides)
        fast = None if _PERCENT.search(g) or _PERCENT.search(p) else _fast(gn, pn, places)
        if fast is not None:
            out[k] = fast
            continue
        jobs.append((g, p, places, strict))
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
        for job in jobs:
            try:
                out.append(judge(*job))
            except Exception:  # noqa: BLE001 - never raise on any string
                out.append(False)
        return out
    n = workers or min(4, os.cpu_count() or 1)
    try:
        return _pool(n).map(jobs, timeout=timeout, on_timeout=False)
    except Exception as e:  # noqa: BLE001 - e.g. no processes left: a failed comparison is a False, not a crash
        logging.getLogger(__name__).warning("math verifier: the worker pool failed (%s: %s); %d comparison(s) "
                                            "scored False", type(e).__name__, e, len(jobs))
        return [False] * len(jobs)


class MathVerifier:
    """Reward 1.0 when the completion's final answer equals ``task.answer`` (the gold answer).

    ``details`` holds the extracted answer; a completion with no answer is a plain 0 (incorrect),
    and a task without a gold answer is ``n/a``. ``precision`` and ``strict`` are
    :func:`is_equivalent`'s options (defaults: 6 decimal places, variable names must match).
    ``reject_restated`` (default ``True``): an answer that copies an expression from the task's
    prompt (not the gold answer as written) scores 0 — see :func:`restates_question`.
    """

    name = "math"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, workers: Optional[int] = None,
                 precision: Optional[int] = None, strict: bool = True, reject_restated: bool = True):
        self.timeout = timeout
        self.reject_restated = bool(reject_restated)
        self.workers = workers
        self.precision = check_precision(precision)
        self.strict = bool(strict)

    def score(self, completion: Any, task: Any) -> VerifyResult:
        """Score one completion against ``task.answer``."""
        return self.score_batch([completion], [task])[0]

    def score_batch(self, completions: Sequence[Any], tasks: Sequence[Any]) -> list[VerifyResult]:
        """Score many completions at once in the worker pool."""
        texts = [completion_text(c) for c in completions]
        golds = [getattr(t, "answer", t) for t in tasks]
        ok = is_equivalent_batch(list(zip([("" if g is None else str(g)) for g in golds], texts)),
                                 timeout=self.timeout, workers=self.workers, precision=self.precision,
                                 strict=self.strict)
        results = []
        for text, gold, good, task in zip(texts, golds, ok, tasks):
            if gold is None:
                results.append(VerifyResult(0.0, NOT_APPLICABLE, {"error": "task has no answer"}))
                continue
            details = {"extracted": _answer(text), "gold": str(gold)}
            if good and self.reject_restated and restates_question(details["extracted"], str(gold), task):
                good = False
                details["error"] = "the answer restates an expression from the question"
            results.append(VerifyResult(1.0 if good else 0.0, CORRECT if good else INCORRECT, details))
        return results


_SQUASH = re.compile(r"[\s$]+|\\[,;:! ]|\\(?:left|right)\b|\\[dt]?(?=frac)")


def _squash(s: str) -> str:
    return _SQUASH.sub("", s)


def restates_question(answer: Optional[str], gold: str, task: Any) -> bool:
    """True when ``answer`` is an expression copied from the task's prompt that is not the gold
    answer as written: ``\\sqrt{8}`` for "Simplify $\\sqrt{8}$", or a pasted "Compute A·B" for a
    matrix product. sympy rightly finds such an answer *equal* to the gold one, but it is the
    question, not an answer to it — rewarding it teaches a policy to echo the prompt. Plain numbers
    are never treated as restated (a number in the question can be the answer)."""
    prompt = getattr(task, "prompt", None)
    if not answer or prompt is None:
        return False
    if isinstance(prompt, (list, tuple)):  # chat messages: the user's turns
        prompt = "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict) and m.get("role") != "system")
    a = _squash(answer)
    if not a or _NUMBER.match(a.replace(",", "")) or a == _squash(gold):
        return False
    answers, texts = {a}, {_squash(str(prompt)[-20_000:])}
    try:
        if normalize(answer) == normalize(gold):
            return False
        answers.add(_squash(normalize(answer)))  # ``\\sqrt 8`` and ``\\sqrt{8}`` alike
        texts.add(_squash(normalize(str(prompt)[-20_000:])))
    except Exception:  # noqa: BLE001 - never raise on any string
        pass
    return any(len(x) >= 3 and x in t for x in answers for t in texts)


from ..registry import register as _register  # noqa: E402 - after the class it registers

_register("math", MathVerifier)

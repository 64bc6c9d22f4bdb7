"""Format and string checks: think/answer structure, strict tags, exact/substring/regex match,
numeric tolerance and the soft overlong length penalty.

Each is registered by name (``verifiers.get("exact_match", parser="boxed")``) and returns a
:class:`VerifyResult` whose ``details`` hold what was extracted, so the logs show *why*. Answers are
pulled out of completions with :mod:`rlenv.parsers` (through :func:`extract`, the one place this
module calls a parser), and a missing gold answer gives ``n/a`` rather than a fake 0.

>>> from rlenv import Task
>>> ExactMatch(parser="boxed").score(r"so \\boxed{42}", Task("q", "42")).reward
1.0
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Callable, Optional, Sequence, Union

from rlenv.parsers import check_think_answer_format, get_parser

from .base import CORRECT, INCORRECT, NOT_APPLICABLE, VerifyResult
from .registry import register

__all__ = ["extract", "think_answer_format", "TagFormat", "ExactMatch", "SubstringMatch", "RegexMatch",
           "NumericMatch", "LengthPenalty", "soft_overlong_penalty", "parse_number"]

Parser = Union[str, Callable[[str], Optional[str]], None]


def extract(text: str, parser: Parser) -> Optional[str]:
    """The answer in ``text`` according to ``parser`` (a name in ``rlenv.parsers.PARSERS`` or a
    function); ``None`` parser means the whole completion, stripped. ``None`` when nothing is found."""
    if parser is None:
        return text.strip()
    return get_parser(parser)(text)


def _verdict(ok: bool, **details) -> VerifyResult:
    return VerifyResult(1.0 if ok else 0.0, CORRECT if ok else INCORRECT, details)


def _gold(task: Any) -> Optional[str]:
    ans = getattr(task, "answer", task)
    return None if ans is None else str(ans)


@register("think_answer_format")
def think_answer_format(completion: str, task: Any = None) -> VerifyResult:
    """1 when the completion is exactly ``<think>…</think><answer>…</answer>`` (R1 style), else 0."""
    return _verdict(check_think_answer_format(completion))


_TAG = re.compile(r"<(/?)([A-Za-z][\w-]{0,63})>")


@register("tag_format")
class TagFormat:
    """Strict tag structure: each of ``tags`` appears exactly once as an open/close pair, in order,
    not nested in one another; any mismatched, unclosed or stray tag gives 0 (no partial credit).

    Args:
        tags: the required tags, in the order they must appear.
        allow_text_outside: when False (default), only whitespace may surround the tagged blocks.
    """

    name = "tag_format"

    def __init__(self, tags: Sequence[str] = ("think", "answer"), allow_text_outside: bool = False):
        if not tags:
            raise ValueError("TagFormat needs at least one tag name, e.g. tags=('think', 'answer')")
        self.tags = tuple(tags)
        self.allow_text_outside = allow_text_outside

    def check(self, text: str) -> tuple[bool, str]:
        """``(ok, reason)`` for ``text``; the reason names the first problem found."""
        wanted = set(self.tags)
        seen: list[str] = []
        open_tag, pos, outside = None, 0, []
        for m in _TAG.finditer(text):
            closing, tag = m.group(1) == "/", m.group(2)
            if tag not in wanted:
                continue
            if open_tag is None:
                outside.append(text[pos:m.start()])
                if closing:
                    return False, f"</{tag}> closes a tag that is not open"
                if tag in seen:
                    return False, f"<{tag}> appears more than once"
                open_tag = tag
            else:
                if not closing:
                    return False, f"<{tag}> opened inside <{open_tag}>"
                if tag != open_tag:
                    return False, f"<{open_tag}> closed by </{tag}>"
                seen.append(tag)
                open_tag = None
            pos = m.end()
        outside.append(text[pos:])
        if open_tag is not None:
            return False, f"<{open_tag}> is never closed"
        if tuple(seen) != self.tags:
            return False, f"tags {seen} found, expected {list(self.tags)} in that order"
        if not self.allow_text_outside and any(s.strip() for s in outside):
            return False, "text outside the tagged blocks"
        return True, ""

    def score(self, completion: str, task: Any = None) -> VerifyResult:
        """1 when the tag structure is exactly right, else 0 with the reason in ``details``."""
        ok, reason = self.check(completion)
        return _verdict(ok, **({"reason": reason} if reason else {}))


@register("exact_match")
class ExactMatch:
    """1 when the extracted answer equals ``task.answer`` (after stripping; case-insensitive unless
    ``case_sensitive``; inner whitespace collapsed)."""

    name = "exact_match"

    def __init__(self, parser: Parser = None, case_sensitive: bool = False):
        self.parser, self.case_sensitive = parser, case_sensitive

    def _norm(self, s: str) -> str:
        s = " ".join(s.split())
        return s if self.case_sensitive else s.casefold()

    def score(self, completion: str, task: Any) -> VerifyResult:
        """Compare the extracted answer with the gold answer."""
        gold = _gold(task)
        if gold is None:
            return VerifyResult(0.0, NOT_APPLICABLE, {"reason": "task has no answer"})
        pred = extract(completion, self.parser)
        if pred is None:
            return _verdict(False, parsed=None, reason="no answer found")
        return _verdict(self._norm(pred) == self._norm(gold), parsed=pred)


@register("substring_match")
class SubstringMatch(ExactMatch):
    """1 when ``task.answer`` occurs in the extracted answer (same normalisation as ExactMatch)."""

    name = "substring_match"

    def score(self, completion: str, task: Any) -> VerifyResult:
        """Look for the gold answer inside the extracted text."""
        gold = _gold(task)
        if gold is None:
            return VerifyResult(0.0, NOT_APPLICABLE, {"reason": "task has no answer"})
        pred = extract(completion, self.parser)
        return _verdict(pred is not None and self._norm(gold) in self._norm(pred), parsed=pred)


@register("regex")
class RegexMatch:
    """1 when ``pattern`` matches the extracted text (``fullmatch=True``: the whole of it). The
    pattern may use ``{answer}``, replaced by the escaped gold answer."""

    name = "regex"

    def __init__(self, pattern: str, parser: Parser = None, fullmatch: bool = False, flags: int = 0):
        try:
            re.compile(pattern.replace("{answer}", "x"), flags)
        except re.error as e:
            raise ValueError(f"RegexMatch: pattern {pattern!r} is not a valid regular expression: {e}") from None
        self.pattern, self.parser, self.fullmatch, self.flags = pattern, parser, fullmatch, flags

    def score(self, completion: str, task: Any = None) -> VerifyResult:
        """Match the pattern (with ``{answer}`` filled in) against the extracted text."""
        pat = self.pattern
        if "{answer}" in pat:
            gold = _gold(task)
            if gold is None:
                return VerifyResult(0.0, NOT_APPLICABLE, {"reason": "pattern uses {answer} but the task has none"})
            pat = pat.replace("{answer}", re.escape(gold))
        text = extract(completion, self.parser)
        if text is None:
            return _verdict(False, parsed=None)
        m = (re.fullmatch if self.fullmatch else re.search)(pat, text, self.flags)
        return _verdict(m is not None, parsed=text)


_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def parse_number(s: Any) -> Optional[float]:
    """A float from ``"1,234.5"``, ``"-3/4"``, ``"12%"`` (→ 12), ``"$5"``, ``"1e-3"``; None otherwise."""
    if s is None:
        return None
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s)
    t = str(s).strip().replace(",", "").replace("−", "-").replace("$", "").rstrip(".").rstrip("%").strip()
    if len(t) > 400:  # no answer needs this many characters; keep float() cheap
        return None
    if "/" in t:
        num, _, den = t.partition("/")
        if _NUMBER.match(num.strip()) and _NUMBER.match(den.strip()):
            try:
                return float(Fraction(num.strip()) / Fraction(den.strip()))
            except (ZeroDivisionError, ValueError):
                return None
        return None
    return float(t) if _NUMBER.match(t) else None


@register("numeric_match")
class NumericMatch:
    """1 when the extracted number is within ``rel_tol`` (relative) or ``abs_tol`` (absolute) of
    ``task.answer``; ``parser`` defaults to the last number in the completion."""

    name = "numeric_match"

    def __init__(self, parser: Parser = "last_number", rel_tol: float = 1e-6, abs_tol: float = 1e-9):
        if rel_tol < 0 or abs_tol < 0:
            raise ValueError(f"NumericMatch: tolerances must be ≥ 0, got rel_tol={rel_tol}, abs_tol={abs_tol}")
        self.parser, self.rel_tol, self.abs_tol = parser, rel_tol, abs_tol

    def score(self, completion: str, task: Any) -> VerifyResult:
        """Compare the extracted number with the gold number."""
        gold = parse_number(getattr(task, "answer", task))
        if gold is None:
            return VerifyResult(0.0, NOT_APPLICABLE, {"reason": f"gold answer {_gold(task)!r} is not a number"})
        raw = extract(completion, self.parser)
        pred = parse_number(raw)
        if pred is None:
            return _verdict(False, parsed=raw, reason="no number found")
        ok = abs(pred - gold) <= max(self.abs_tol, self.rel_tol * abs(gold))
        return _verdict(ok, parsed=raw)


def soft_overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment (Yu et al., 2025): 0 up to ``max_length - buffer``,
    then falling linearly to -1 at ``max_length``, and -1 beyond."""
    if buffer <= 0:
        return 0.0 if length <= max_length else -1.0
    start = max_length - buffer
    if length <= start:
        return 0.0
    if length <= max_length:
        return (start - length) / buffer
    return -1.0


@register("length_penalty")
class LengthPenalty:
    """A length penalty in [-1, 0] (:func:`soft_overlong_penalty`), measured in characters, or in
    tokens when a ``tokenizer`` is given. Use it with a positive weight: it only subtracts."""

    name = "length_penalty"

    def __init__(self, max_length: int, buffer: Optional[int] = None, tokenizer: Any = None):
        if max_length <= 0:
            raise ValueError(f"LengthPenalty: max_length must be > 0, got {max_length}")
        self.max_length = int(max_length)
        self.buffer = int(max_length // 4 if buffer is None else buffer)
        if not 0 <= self.buffer <= self.max_length:
            raise ValueError(f"LengthPenalty: buffer must be in [0, max_length], got {self.buffer}")
        self.tokenizer = tokenizer

    def length(self, completion: str) -> int:
        """The completion's length in the configured unit."""
        if self.tokenizer is None:
            return len(completion)
        return len(self.tokenizer(completion, add_special_tokens=False)["input_ids"])

    def score(self, completion: str, task: Any = None) -> VerifyResult:
        """The penalty (≤ 0) for this completion's length."""
        n = self.length(completion)
        p = soft_overlong_penalty(n, self.max_length, self.buffer)
        return VerifyResult(p, CORRECT if p == 0 else INCORRECT, {"length": n})

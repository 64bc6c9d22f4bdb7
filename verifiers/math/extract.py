"""Find the final answer in a completion (or in a gold solution).

The generic pieces — ``\\boxed{}``, ``<answer>`` tags, GSM8K's ``####``, the last number — live in
:mod:`rlenv.parsers`; this module adds the math conventions on top: several boxes in a row are one
multi-part answer (``\\boxed{1} and \\boxed{2}``), "The final answer is $x$" (Minerva/lm-eval),
the last inline math span, and plain answers passed through untouched. Linear time throughout.
"""

from __future__ import annotations

import re
from typing import Optional

from rlenv.parsers import parse_first_boxed, parse_gsm8k, parse_last_number, parse_tag

# what may sit between two boxes that belong to one answer: punctuation, "and", spacing, $
_BOX_GAP = re.compile(r"\s|[,;.$&]|\\\]|\\\[|\\\)|\\\(|\\quad|\\qquad|\\text\{|\}|\\,|\band\b|\bor\b"
                      r"|[a-zA-Z](?:_\{?\w+\}?)?\s*=")  # "\boxed{1} and \( y_2 = \boxed{2}"
_PHRASE = re.compile(r"(?:final answer is|answer is|final answer:|answer:)\s*", re.IGNORECASE)
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|(?<!\\)\$((?:[^$\n]|\\\$)+?)(?<!\\)\$|\\\((.+?)\\\)", re.DOTALL)
_PROSE = re.compile(r"[A-Za-z]{2,}")
_ALLOWED_WORDS = {"and", "or", "text", "frac", "dfrac", "tfrac", "sqrt", "pi", "infty", "left", "right", "cdot",
                  "times", "le", "leq", "ge", "geq", "neq", "lt", "gt", "in", "cup", "pm", "mp", "circ", "percent",
                  "pct", "percentage", "boxed", "mbox", "mathrm", "begin", "end", "pmatrix", "bmatrix", "matrix",
                  "array", "quad", "qquad", "cap", "sin", "cos", "tan", "log", "ln", "exp", "sec", "csc", "cot",
                  "textbf", "displaystyle", "approx", "binom", "dbinom", "infinity", "emptyset", "degree",
                  "textnormal", "vmatrix"}
MAX_TEXT = 200_000  # longer completions are cut to their last MAX_TEXT characters


def _box_spans(text: str, last: int = 20) -> list[tuple[int, int, str]]:
    """(start, end, content) of the last ``last`` boxes, in order. Each box is read by
    :func:`rlenv.parsers.parse_first_boxed` from its own marker on (a bounded window)."""
    starts, pos = [], 0
    # the next hit of each marker, searched again only once passed: a marker absent from the text
    # is searched once, not once per box (which made 20 000 boxes cost 20 000 scans of the text)
    nxt = {m: text.find(m) for m in ("\\boxed", "\\fbox")}
    while True:
        for m, k in nxt.items():
            if 0 <= k < pos:
                nxt[m] = text.find(m, pos)
        i = min((k for k in nxt.values() if k >= 0), default=-1)
        if i < 0:
            break
        starts.append(i)
        pos = i + 5
    spans = []
    for i in starts[-last:]:
        first = parse_first_boxed(text[i:i + 20_000])  # the box at i (linear, unlike all boxes)
        if not first:
            continue
        end = text.find(first, i) + len(first)
        end += text[end:end + 1] == "}"  # past the closing brace of \\boxed{…}
        if spans and i < spans[-1][1]:  # a box nested in the previous one
            continue
        spans.append((i, end, first))
    return spans


def _boxed_answer(text: str) -> Optional[str]:
    spans = _box_spans(text)
    if not spans:
        return None
    # walk back from the last box while the text between two boxes is only a connector
    picked = [spans[-1]]
    for prev in reversed(spans[:-1]):
        gap = text[prev[1]:picked[-1][0]]
        # a connector between two boxes, or at most three words ("\\boxed{1} papers and \\boxed{2} bins")
        if len(gap) > 60 or len(_BOX_GAP.sub(" ", gap).split()) > 3:
            break
        picked.append(prev)
    return ", ".join(c for _, _, c in reversed(picked))


def _after_phrase(text: str) -> Optional[str]:
    last = None
    for m in _PHRASE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end():]
    for stop in ("I hope", "\n\n", ". ", "<|"):
        k = rest.find(stop)
        if k > 0:
            rest = rest[:k]
    return rest.strip().rstrip(".").strip() or None


def prose_words(s: str) -> list:
    """Words in ``s`` outside math spans and ``\\text{}`` that are not LaTeX or connectors."""
    s = _strip_math(s)
    s = re.sub(r"\\text\{[^{}]*\}", " ", s)
    s = re.sub(r"\\[a-zA-Z]+", " ", s)
    return [w for w in _PROSE.findall(s) if w.lower() not in _ALLOWED_WORDS]


def _last_span_or_number(text: str) -> Optional[str]:
    """The last inline math span — or a number written after it ("the largest $n$ is 34")."""
    last = None
    for m in _MATH_SPAN.finditer(text):
        last = m
    tail = text if last is None else text[last.end():]
    num = parse_last_number(tail)
    if num is not None or last is None:
        return num
    return next(g for g in last.groups() if g is not None).strip()


def extract_answer(text: str) -> Optional[str]:
    """The final answer in ``text`` as a string, or ``None`` when there is none.

    Order: the last ``\\boxed{}`` (with adjacent boxes joined), ``<answer>…</answer>``, ``####``;
    then a short answer (at most one word of prose) is returned as it is; otherwise "the final answer
    is …", then the last ``$…$`` span or a number written after it.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[-MAX_TEXT:]
    ans = _boxed_answer(text) or parse_tag(text, "answer") or (parse_gsm8k(text) if "####" in text else None)
    if ans:
        # "... \boxed{255} ... The final answer is $10,455$": a stated final answer after the last box wins
        m = None
        for m in _PHRASE.finditer(text):
            pass
        if m is not None and m.start() > text.rfind("\\boxed") >= 0:
            phrase = _after_phrase(text)
            if phrase:
                return extract_answer(phrase)
        return ans
    words = prose_words(text)
    has_math = _MATH_SPAN.search(text) is not None
    if not words or (len(words) == 1 and not has_math):
        return _unwrap_math(text.strip())
    phrase = _after_phrase(text)
    if phrase and phrase != text:
        return extract_answer(phrase)
    return _last_span_or_number(text)


def _unwrap_math(s: str) -> str:
    """``$x$`` / ``\\(x\\)`` / ``$$x$$`` → ``x`` when the delimiters enclose the whole answer."""
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) > len(a) + len(b):
            inner = s[len(a):len(s) - len(b)]
            if a not in inner and b not in inner:
                return inner.strip()
    return s


def _strip_math(s: str) -> str:
    """Text outside math delimiters is what decides prose; words inside ``$…$`` are variables."""
    return _MATH_SPAN.sub(" ", s) if "$" in s or "\\(" in s or "\\[" in s else s

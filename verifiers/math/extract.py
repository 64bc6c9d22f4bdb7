"""Find the final answer in a completion (or in a gold solution).

The generic pieces — ``\\boxed{}``, ``<answer>`` tags, GSM8K's ``####``, the last number — live in
:mod:`rlenv.parsers`; this module adds the math conventions on top: several boxes in a row are one
multi-part answer (``\\boxed{1} and \\boxed{2}``), "The final answer is $x$" (Minerva/lm-eval),
an answer introduced by any word (``Total: 42``, ``Therefore 42``, ``I get $42$.``), the last inline
math span or number (a decimal comma such as ``2,74`` included), choice letters (``A. Because …``),
and plain answers passed through untouched. Linear time throughout.
"""

from __future__ import annotations

import re
from typing import Optional

from rlenv.parsers import NUMBER_PATTERN, parse_first_boxed, parse_gsm8k, parse_tag

from .normalize import _UNIT_WORDS

# what may sit between two boxes that belong to one answer: punctuation, "and", spacing, $
_BOX_GAP = re.compile(r"\s|[,;.$&]|\\\]|\\\[|\\\)|\\\(|\\quad|\\qquad|\\text\{|\}|\\,|\band\b|\bor\b"
                      r"|[a-zA-Z](?:_\{?\w+\}?)?\s*=")  # "\boxed{1} and \( y_2 = \boxed{2}"
_PHRASE = re.compile(r"(?:final answer is|answer is|final answer:|answer:)\s*:?\s*", re.IGNORECASE)
_EMPHASIS = re.compile(r"\*\*|__")  # markdown bold: "**Answer:** 42"
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|(?<!\\)\$((?:[^$\n]|\\\$)+?)(?<!\\)\$|\\\((.+?)\\\)", re.DOTALL)
_PROSE = re.compile(r"[A-Za-z]{2,}")
_ALLOWED_WORDS = {"and", "or", "text", "frac", "dfrac", "tfrac", "sqrt", "pi", "infty", "left", "right", "cdot",
                  "times", "le", "leq", "ge", "geq", "neq", "lt", "gt", "in", "cup", "pm", "mp", "circ", "percent",
                  "pct", "percentage", "boxed", "mbox", "mathrm", "begin", "end", "pmatrix", "bmatrix", "matrix",
                  "array", "quad", "qquad", "cap", "sin", "cos", "tan", "log", "ln", "exp", "sec", "csc", "cot",
                  "textbf", "displaystyle", "approx", "binom", "dbinom", "infinity", "emptyset", "degree",
                  "textnormal", "vmatrix"}
MAX_TEXT = 200_000  # longer completions are cut to their last MAX_TEXT characters
_WORD = re.compile(r"[A-Za-z]{2,}(?:'[A-Za-z]+)?")
_MASK = re.compile(r"\\text\{[^{}]*\}|\\(?:begin|end)\{[^{}]*\}(?:\{[^{}]*\})?|\\[a-zA-Z]+")
_GLUED_UNIT = re.compile(r"^(\$?[-−]?[\d.,]*\d)\s*"
                         r"(?:[€£¥]|(?:[kcm]?m|ft|in)[²³]|(?:cm|mm|km|kg|mg|ml|ft|lbs?|oz)\b)\.?$")
_UNITS = re.compile(r"^(?:" + _UNIT_WORDS + r"|percent|percentage|pct|each|total|only|exactly|approximately|about)$",
                    re.IGNORECASE)
_INLINE = re.compile(r"\d|\\[a-zA-Z]|\$|^[A-Za-z]$")
# a number with a decimal comma (not thousands grouping, not a pair inside brackets): 2,74  1000,99  0,111
_NUMBER = re.compile(r"(?<![(\[,.\d])[-−]?(?:\d+,\d{1,2}(?![\d,])|\d{4,},\d+(?![\d,])|0,\d+(?![\d,])"
                     r"|\d+,\d{4,}(?![\d,]))|" + NUMBER_PATTERN)
_CHOICE = re.compile(r"[A-J]")
_LEADING_CHOICE = re.compile(r"^\s*\(?\s*([A-J])\s*\)?\s*(?:[.):]|$)")
_MARKER = re.compile(r"(?<![\w\\])\(?([A-J])[.)](?=\s|$)")  # "(B)", "B)" or "B." written as an option label
_STANDALONE = re.compile(r"(?<![\w\\{_^$'])([A-J])(?![\w}_^'$])(?<!A(?= [a-z]))")  # "A cat" is an article


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
        return _unclosed_box(text)
    # walk back from the last box while the text between two boxes is only a connector
    picked = [spans[-1]]
    for prev in reversed(spans[:-1]):
        gap = text[prev[1]:picked[-1][0]]
        # a connector between two boxes, or at most three words ("\\boxed{1} papers and \\boxed{2} bins")
        if len(gap) > 60 or len(_BOX_GAP.sub(" ", gap).split()) > 3:
            break
        picked.append(prev)
    return ", ".join(c for _, _, c in reversed(picked))


def _unclosed_box(text: str) -> Optional[str]:
    """A completion cut off inside its only box (``… \\boxed{42``): what follows the opening brace,
    when it is short — the answer is all there is."""
    i = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if i < 0 or text.count("\\boxed") + text.count("\\fbox") > 1:  # one box, cut off: not a pile of them
        return None
    rest = text[text.find("{", i) + 1:].strip()
    return rest if 0 < len(rest) <= 200 and "\n\n" not in rest else None


def _after_phrase(text: str, strict: bool = False) -> Optional[str]:
    """The answer after the last "the answer is" / "answer:". ``strict``: None when more numbers or
    maths follow it (``The answer is 72. No wait, it's 73.`` — the later statement decides)."""
    last = None
    for m in _PHRASE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end():]
    end = len(rest)
    for stop in ("I hope", "\n\n", ". ", "<|"):
        k = rest.find(stop)
        if 0 < k < end:
            end = k
    if strict and re.search(r"\d|\$|\\\(|\\\[|\\boxed", rest[end:]):
        return None
    return rest[:end].strip().rstrip(".").strip() or None


def _introduced(text: str) -> Optional[str]:
    """The answer after the last word of prose on the last line: ``Total: 42``, ``Therefore 42.``,
    ``I get $42$.``, ``The total is 72 dollars``. None when what follows is not a bare answer (more
    words, an unpaired ``$``, nothing at all)."""
    line = text.rstrip()
    line = line[line.rfind("\n") + 1:][-400:]
    masked = _MASK.sub(lambda m: " " * len(m.group()), _MATH_SPAN.sub(lambda m: " " * len(m.group()), line))
    tail_start = None
    for m in _WORD.finditer(masked):
        w = m.group().lower()
        if (w not in _ALLOWED_WORDS or w == "matrix") and not _UNITS.match(w):
            tail_start = m.end()
    # an introducing word is set apart from the answer ("orW(x)=1" is not "or" + "W(x)=1")
    if tail_start is None or not re.match(r"[\s:=,]", line[tail_start:tail_start + 1]):
        return None
    tail = line[tail_start:].strip().lstrip(":=,").strip().rstrip(" .!;").strip()
    if not tail or not _INLINE.search(tail) or (tail.count("$") - tail.count("\\$")) % 2 \
            or tail.count("{") != tail.count("}"):
        return None
    glued = _GLUED_UNIT.match(tail)  # 1,000.99€ and 12m² are the numbers
    return glued.group(1) if glued else _unwrap_math(tail)


def _word_before_number(text: str, word: str) -> bool:
    """True when the one word of prose in a short answer comes before its first number
    (``Soucis : 2,74``), not after it as a unit or label (``5 apples``, ``x = 3 meters``)."""
    digit, at = re.search(r"\d", text), text.find(word)
    after = text[at + len(word):at + len(word) + 1]
    return digit is not None and at < digit.start() and bool(re.match(r"[\s:=,]", after))


def prose_words(s: str) -> list:
    """Words in ``s`` outside math spans and ``\\text{}`` that are not LaTeX or connectors."""
    s = _strip_math(s)
    s = re.sub(r"\\text\{[^{}]*\}", " ", s)
    s = re.sub(r"\\[a-zA-Z]+", " ", s)
    return [w for w in _PROSE.findall(s) if w.lower() not in _ALLOWED_WORDS]


def _last_number(text: str) -> Optional[str]:
    """The last number (thousands separators dropped; a decimal comma kept for the comparison)."""
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    s = last.group(0).replace("−", "-").replace(" ", "")
    return s if re.fullmatch(r"-?\d+,\d+", s) and not re.fullmatch(r"-?[1-9]\d{0,2},\d{3}", s) else s.replace(",", "")


def _last_span_or_number(text: str) -> Optional[str]:
    """The last inline math span — or a number written after it ("the largest $n$ is 34")."""
    last = None
    for m in _MATH_SPAN.finditer(text):
        last = m
    tail = text if last is None else text[last.end():]
    num = _last_number(tail)
    if num is not None or last is None:
        return num
    return next(g for g in last.groups() if g is not None).strip()


def is_choice(answer: str) -> bool:
    """True when a normalised answer is one multiple-choice letter (``A`` … ``J``)."""
    return bool(_CHOICE.fullmatch(answer))


def extract_choice(text: str) -> Optional[str]:
    """The choice letter a completion picks, or None: a leading ``A.`` / ``(B)`` / ``C)`` when no other
    option label follows, the one letter after "the answer is", or the one standalone capital A–J in
    the text. Naming several letters is no answer (listing every option must not score)."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = _EMPHASIS.sub("", text[-MAX_TEXT:])
    m = _LEADING_CHOICE.match(text)
    if m and set(_MARKER.findall(text)) <= {m.group(1)}:
        return m.group(1)
    phrase = _after_phrase(text)
    if phrase:
        lower = re.fullmatch(r"\s*\(?([a-j])\)?\.?\s*", phrase)  # "answer: b" names a choice too
        letters = {lower.group(1).upper()} if lower else set(_STANDALONE.findall(_strip_math(phrase)))
        if len(letters) == 1:
            return letters.pop()
    letters = set(_STANDALONE.findall(_strip_math(text)))
    return letters.pop() if len(letters) == 1 else None


def extract_answer(text: str) -> Optional[str]:
    """The final answer in ``text`` as a string, or ``None`` when there is none.

    Order: the last ``\\boxed{}`` (with adjacent boxes joined; an unclosed last box's short
    remainder), ``<answer>…</answer>``, ``####``; a text without prose is returned as it is; then
    "the final answer is …" (unless more numbers follow it), the answer after the last word of
    prose on the last line (``Total: 42``), a short answer with one word (``5 apples``, ``odd``) as
    it is, and finally the last ``$…$`` span or a number written after it.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = _EMPHASIS.sub("", text[-MAX_TEXT:])
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
    if not words:
        return _unwrap_math(text.strip())
    intro = _introduced(text)
    # a stated answer wins, unless a later line states another (``The answer is 72. No, it's 73.``)
    phrase = _after_phrase(text, strict=intro is not None)
    if phrase and phrase != text:
        return extract_answer(phrase)
    if intro and intro != text.strip():
        return extract_answer(intro)
    if len(words) == 1 and not has_math and not _word_before_number(text, words[0]):
        return _unwrap_math(text.strip())
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

"""Answer parsers: pull the final answer out of a model's completion.

Every parser is a plain function ``(text: str) -> str | None`` that returns ``None`` when the text
holds no answer of its kind, so a verifier can tell "no answer" from "wrong answer". All of them run
in linear time in the length of the text: they scan with ``str.find`` / a brace counter or use
regexes without nested quantifiers, so 100 KB of junk from a degenerate model costs milliseconds,
never a catastrophic backtrack.

>>> parse_boxed(r"so the answer is \\boxed{\\frac{1}{2}}")
'\\\\frac{1}{2}'
>>> parse_tag("<answer> 42 </answer>")
'42'
>>> parse_last_number("it costs $1,234.50 in total")
'1234.50'
"""

from __future__ import annotations

import re
from typing import Callable, Optional

__all__ = [
    "parse_boxed", "parse_all_boxed", "parse_first_boxed", "parse_tag", "parse_gsm8k", "parse_last_number",
    "parse_code_block", "check_think_answer_format", "make_tag_parser", "PARSERS", "get_parser",
]

_BOX_MARKERS = ("\\boxed", "\\fbox")


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of every balanced ``{`` to the index of its ``}`` in one stack pass (linear);
    escaped braces (``\\{``) do not count."""
    match, stack, k, n = {}, [], 0, len(text)
    while k < n:
        ch = text[k]
        if ch == "\\":
            k += 2
            continue
        if ch == "{":
            stack.append(k)
        elif ch == "}" and stack:
            match[stack.pop()] = k
        k += 1
    return match


def _box_spans(text: str) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of every ``\\boxed{…}`` / ``\\fbox{…}`` (balanced braces), in order of
    appearance; the content is ``text[start:end]``.

    Markers are found with ``str.find`` and braces matched from one precomputed stack pass, so the
    cost is linear in ``len(text)`` even for ``"\\boxed{" * 20000``. Spans, not strings: 20 000
    nested boxes would otherwise cost 20 000 copies of most of the text.
    """
    out: list[tuple[int, int, int]] = []
    match: dict[int, int] | None = None
    for marker in _BOX_MARKERS:
        pos = 0
        while True:
            i = text.find(marker, pos)
            if i < 0:
                break
            j = i + len(marker)
            # `\boxed {x}` and `\boxed x` (a single token, as some models write) are both LaTeX-valid
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                if match is None:
                    match = _matching_braces(text)
                k = match.get(j)
                if k is not None:  # an unbalanced box never closes, so it holds no answer
                    out.append((i, j + 1, k))
                pos = j + 1
            elif j > i + len(marker) and j < len(text):  # `\boxed 5`: up to the next space or `$`
                k = j
                while k < len(text) and text[k] not in " $\n":
                    k += 1
                if k > j:
                    out.append((i, j, k))
                pos = k
            else:
                pos = j
    out.sort(key=lambda t: t[0])
    return out


def parse_all_boxed(text: str) -> list[str]:
    """Every boxed answer in ``text`` (stripped), in order. Empty list when there is none.

    Boxes nested in boxes are returned too, so the output can be far larger than ``text``
    (``"\\boxed{" * n + "}" * n``); use :func:`parse_boxed` / :func:`parse_first_boxed` for one answer."""
    text = text or ""
    return [text[a:b].strip() for _, a, b in _box_spans(text)]


def parse_first_boxed(text: str) -> Optional[str]:
    """The content of the *first* box in ``text`` (stripped), or None; linear time."""
    spans = _box_spans(text or "")
    return text[spans[0][1]:spans[0][2]].strip() if spans else None


def parse_boxed(text: str) -> Optional[str]:
    """The content of the *last* ``\\boxed{…}`` (or ``\\fbox{…}``), nested braces kept intact.

    Models often box intermediate results; the last box is the final answer by convention (the
    MATH / Minerva grading scripts do the same). Returns ``None`` when nothing is boxed.
    """
    spans = _box_spans(text or "")
    return text[spans[-1][1]:spans[-1][2]].strip() if spans else None


def parse_tag(text: str, tag: str = "answer", strict: bool = False) -> Optional[str]:
    """The content of the last ``<tag>…</tag>`` pair, stripped.

    ``strict=True`` requires the whole completion to be exactly one such pair, apart from
    surrounding whitespace and, optionally, a leading ``<think>…</think>`` block — what a format
    reward wants. Non-strict mode finds the last closing tag and its nearest opening tag before it.
    """
    if not text:
        return None
    open_t, close_t = f"<{tag}>", f"</{tag}>"
    if strict:
        body = text.strip()
        if body.startswith("<think>"):
            end = body.find("</think>")
            if end < 0:
                return None
            body = body[end + len("</think>"):].strip()
        if not (body.startswith(open_t) and body.endswith(close_t)):
            return None
        inner = body[len(open_t):len(body) - len(close_t)]
        if open_t in inner or close_t in inner:
            return None
        return inner.strip()
    end = text.rfind(close_t)
    if end < 0:
        return None
    start = text.rfind(open_t, 0, end)
    if start < 0:
        return None
    return text[start + len(open_t):end].strip()


def make_tag_parser(tag: str = "answer", strict: bool = False) -> Callable[[str], Optional[str]]:
    """A one-argument parser for ``<tag>…</tag>`` (handy as a verifier's ``parser=``)."""

    def parser(text: str) -> Optional[str]:
        return parse_tag(text, tag=tag, strict=strict)

    parser.__name__ = f"parse_tag_{tag}{'_strict' if strict else ''}"
    return parser


#: A number (regex source): optional sign, digits with optional thousands separators, optional
#: decimals, or a fraction a/b. No nested quantifiers, so matching is linear.
NUMBER_PATTERN = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?|[-−]?\.\d+"
_NUM_RE = re.compile(NUMBER_PATTERN)


def _clean_number(s: str) -> str:
    s = s.replace(",", "").replace("−", "-").replace(" ", "")
    return s


def parse_last_number(text: str) -> Optional[str]:
    """The last number in ``text``: handles ``-``, decimals, thousands separators (``1,234``) and
    fractions (``3/4``). Separators are removed (``"1,234.5"`` → ``"1234.5"``)."""
    if not text:
        return None
    last = None
    for m in _NUM_RE.finditer(text):
        last = m.group(0)
    return None if last is None else _clean_number(last)


def parse_gsm8k(text: str) -> Optional[str]:
    """The GSM8K-style answer after the last ``####`` (the number that follows, separators removed).

    Falls back to the raw remainder of the line when it holds no number.
    """
    if not text:
        return None
    i = text.rfind("####")
    if i < 0:
        return None
    rest = text[i + 4:].strip()
    line = rest.split("\n", 1)[0].strip()
    m = _NUM_RE.search(line)
    if m:
        return _clean_number(m.group(0))
    return line or None


def parse_code_block(text: str, language: Optional[str] = "python", which: str = "last") -> Optional[str]:
    """The body of a fenced code block (```` ```python … ``` ````).

    ``language`` selects blocks whose info string is that language (case-insensitive; ``py`` counts
    as python); ``None`` accepts any block, including bare ```` ``` ````. ``which`` is ``"last"``
    (default: the model's final version) or ``"first"``. An unclosed final fence (a truncated
    completion) is not a block.
    """
    if not text:
        return None
    if which not in ("first", "last"):
        raise ValueError(f"parse_code_block: which must be 'first' or 'last', got {which!r}")
    wanted = None if language is None else {language.lower()} | ({"py", "python3"} if language.lower() == "python" else set())
    blocks: list[str] = []
    pos = 0
    while True:
        i = text.find("```", pos)
        if i < 0:
            break
        nl = text.find("\n", i + 3)
        if nl < 0:
            break
        info = text[i + 3:nl].strip().lower()
        j = text.find("```", nl + 1)
        if j < 0:
            break
        lang = info.split()[0] if info else ""
        if wanted is None or lang in wanted:
            blocks.append(text[nl + 1:j].rstrip("\n"))
            if which == "first":
                break
        pos = j + 3
    if not blocks:
        return None
    return blocks[0] if which == "first" else blocks[-1]


def check_think_answer_format(text: str, answer_tag: str = "answer") -> bool:
    """True when the completion is exactly ``<think>…</think>`` then ``<answer>…</answer>``
    (whitespace between and around allowed, each tag once, non-empty answer) — the R1-style format."""
    if not text:
        return False
    body = text.strip()
    if not body.startswith("<think>") or body.count("<think>") != 1 or body.count("</think>") != 1:
        return False
    open_t, close_t = f"<{answer_tag}>", f"</{answer_tag}>"
    if body.count(open_t) != 1 or body.count(close_t) != 1:
        return False
    ans = parse_tag(body, tag=answer_tag, strict=True)
    return bool(ans)


#: parsers by name, for specs and env kwargs (``parser: boxed``)
PARSERS: dict[str, Callable[[str], Optional[str]]] = {
    "boxed": parse_boxed,
    "tag": parse_tag,
    "answer_tag": parse_tag,
    "gsm8k": parse_gsm8k,
    "last_number": parse_last_number,
    "code": parse_code_block,
}


def get_parser(name_or_fn) -> Callable[[str], Optional[str]]:
    """A parser from its name in :data:`PARSERS` (or a callable, returned as is)."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return PARSERS[name_or_fn]
    except KeyError:
        raise ValueError(f"unknown parser {name_or_fn!r}; choose one of {sorted(PARSERS)} "
                         f"or pass a function (text) -> str | None") from None

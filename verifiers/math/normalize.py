"""String normalisation of a final answer before it is parsed.

Everything here is plain string work in linear time (``str.replace`` and regexes without nested
quantifiers), so a 100 KB answer costs milliseconds. It removes what never changes the value of an
answer — display delimiters, spacing commands, ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac``,
thousands separators, ``\\text{}`` units, degrees, percent, a trailing period — the conventions
of the MATH/Minerva graders (Hendrycks et al. 2021; Lewkowycz et al. 2022) and PRM800K's grader.
"""

from __future__ import annotations

import re

# LaTeX spacing and sizing commands: never part of a value.
_DROP = (
    "\\left", "\\right", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\big", "\\Big", "\\displaystyle",
    "\\textstyle", "\\limits", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\qquad", "\\quad", "~",
    "\\mathrm", "\\mathbf", "\\boldsymbol", "\\mathit", "\\rm ", "\\hspace", "\\vphantom",
)
_RENAME = (
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"), ("\\dbinom", "\\binom"),
    ("\\tbinom", "\\binom"), ("\\leqslant", "\\leq"),
    ("\\geqslant", "\\geq"), ("\\lt", "<"), ("\\gt", ">"), ("\\textnormal", "\\text"),
    ("\\textbf", "\\text"), ("\\textit", "\\text"), ("\\mbox", "\\text"), ("\\operatorname", "\\text"),
    ("\\emph", "\\text"), ("\\tiny", ""), ("\\dots", ""), ("\\ldots", ""), ("\\cdots", ""),
    ("\\mathbb", ""), ("\\langle", "("), ("\\rangle", ")"), ("\\varnothing", "\\emptyset"), ("∅", "\\emptyset"),
    ("\\boxed", ""), ("\\fbox", ""),
    # unicode that models write instead of LaTeX
    ("≤", "\\leq "), ("≥", "\\geq "), ("≠", "\\neq "), ("−", "-"), ("×", "\\times "), ("÷", "\\div "),
    ("π", "\\pi "), ("∞", "\\infty "), ("√", "\\sqrt"), ("²", "^2"), ("³", "^3"), ("°", "^\\circ"),
    ("·", "\\cdot "), ("∪", "\\cup "), ("∈", "\\in "), ("±", "\\pm "), ("∓", "\\mp "),
    (">=", "\\geq "), ("<=", "\\leq "), ("!=", "\\neq "), ("=>", "\\Rightarrow "),
)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree|\^\s*\{\s*\\text\{o\}\s*\}")
_PERCENT = re.compile(r"\\%|%|\s(?:percent(?:age)?|pct)\b")
_THOUSANDS = re.compile(r"(?<![\d.(\[{,])([1-9]\d{0,2})((?:,\d{3})+)(?![\d,])")
_THIN_THOUSANDS = re.compile(r"(?<=\d)\s?\{\s?,\s?\}\s?(?=\d{3})|(?<=\d),\\!(?=\s?\d{3})")
_SPACE_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?: \d{3})+)(?![\d.,])")
_MIXED_TEXT = re.compile(r"(?<![\w.,/^{])([+-]?)(\d{1,3}(?: \d{3})+|\d+) (\d+)/(\d+)(?![\w/.^])")
_MIXED_LATEX = re.compile(r"(?<![\w.^{}])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}(?!\s*[a-zA-Z\\(])")
_SHORT_REL = re.compile(r"\\(le|ge|ne)(?![a-zA-Z])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ESCAPED_CMD = re.compile(r"(?<!\\)\\\\(?=[a-zA-Z]{2,})")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_SHORT2 = re.compile(r"\\frac\s*(\d)\s*(?=\{)")
_FRAC_SHORT3 = re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_UNIT_WORDS = (
    "units?|cm|mm|km|meters?|metres?|centimeters?|inches|inch|in|feet|foot|ft|yards?|miles?|mph|"
    "square|sq|cubic|hours?|hrs?|minutes?|mins?|seconds?|sec|days?|weeks?|years?|dollars?|cents?|"
    "yuan|euros?|kg|grams?|pounds?|lbs?|ounces?|oz|liters?|litres?|ml|degrees?|radians?|rad|"
    "people|students|ways|points|times|books|coins|apples|marbles"
)
_TRAILING_UNIT = re.compile(r"(?<=[\d}])(?:\s*\\text\{\s*(?:" + _UNIT_WORDS + r"|[a-z])[^{}]*\}|\s+(?:"
                            + _UNIT_WORDS + r")\b)(?:\s*\^\s*\{?[23]\}?)?\s*$")
_TRAILING_FILLER = re.compile(r"(?<=[\d}])\s+(?:in (?:all|total)|altogether|in each|each|total|overall|in the end)\s*$",
                              re.IGNORECASE)
_TRAILING_TEXT = re.compile(r"(?<=[\d}])\s*\\text\{[^{}]*\}(?:\s*\^\s*\{?[23]\}?)?\s*$")
_CHOICE = re.compile(r"^\(?\s*\\?(?:text\{)?\s*\(?([A-Ea-e])\)?\s*\}?\s*\)?$")


def strip_delimiters(s: str) -> str:
    """Remove math-mode delimiters: ``$``, ``$$``, ``\\(``, ``\\)``, ``\\[``, ``\\]``."""
    s = s.replace("\\$", " ").replace("$", " ")
    for d in ("\\(", "\\)", "\\[", "\\]"):
        s = s.replace(d, " ")
    return s.strip()


def _collapse_nesting(s: str, open_c: str, close_c: str) -> str:
    """Drop redundant bracket pairs: ``((((1))))`` → ``(1)``, in one linear pass (a stack)."""
    if s.count(open_c) < 2:
        return s
    match, stack = {}, []
    for i, c in enumerate(s):
        if c == open_c:
            stack.append(i)
        elif c == close_c and stack:
            match[stack.pop()] = i
    drop = set()
    for i, j in match.items():
        k = i + 1
        while k < j and s[k] == " ":
            k += 1
        m = j - 1
        while m > i and s[m] == " ":
            m -= 1
        if k < j and s[k] == open_c and match.get(k) == m:
            drop.update((i, j))
    return "".join(c for i, c in enumerate(s) if i not in drop) if drop else s


def normalize(s: str) -> str:
    """Canonical LaTeX-ish text of one final answer (see the module docstring)."""
    s = _CONTROL.sub("", strip_delimiters(s)).replace('\\"', " ").replace('"', " ")  # quoted answers
    # a mixed number written on one line: "4 4/9" is 40/9, "-1 000 4/9" is -(1000 + 4/9)
    s = _MIXED_TEXT.sub(lambda m: f"{m.group(1)}({m.group(2).replace(' ', '')}+{m.group(3)}/{m.group(4)})", s)
    s = _ESCAPED_CMD.sub(r"\\", s)  # "\\frac" from double-escaped JSON/LaTeX is "\frac"
    s = _SHORT_REL.sub(r"\\\1q ", s)  # \le, \ge, \ne → \leq, \geq, \neq
    for old, new in _RENAME:
        s = s.replace(old, new)
    s = _THIN_THOUSANDS.sub("", s)  # 14{,}916 and 11,\!111 are one number
    s = s.replace("\\\\", " \\row ")  # matrix row breaks, before "\ " spacing is dropped
    for d in _DROP:
        s = s.replace(d, " ")
    s = s.replace("\\{", "\\lset ").replace("\\}", " \\rset")
    s = s.replace("\n", " ")
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub(" ", s)
    s = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    s = _SPACE_THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_SHORT2.sub(r"\\frac{\1}", s)
    s = _FRAC_SHORT3.sub(r"\\frac\1{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _MIXED_LATEX.sub(r"(\1+\\frac{\2}{\3})", s)  # MATH writes 2\frac{1}{4} for 9/4
    s = " ".join(s.split()).replace("{}", "")
    s = _collapse_nesting(_collapse_nesting(s, "(", ")"), "{", "}")
    s = s.rstrip(" .")
    # units after a number: "10 \text{ units}", "125 miles", "15 cm^2", "12 in all" → the number
    for _ in range(2):
        t = _TRAILING_UNIT.sub("", _TRAILING_FILLER.sub("", s)).strip()
        t = _TRAILING_TEXT.sub("", t).strip() if t else t
        if t and t != s:
            s = t.rstrip(" .")
    m = _CHOICE.match(s)
    if m and ("(" in s or ("text" in s and m.group(1).isupper())):  # multiple choice: "(C)", "\text{(C)}" → "C"
        s = m.group(1).upper()
    return s


def canonical_text(s: str) -> str:
    """A loose text key for answers that are words: ``\\text{Evelyn}`` → ``evelyn``."""
    s = normalize(s)
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("{", "").replace("}", "").replace("\\", "")
    return " ".join(s.lower().split()).strip(" .")

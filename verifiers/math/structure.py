"""Turn one normalised final answer into a small tree of values.

Node kinds (plain tuples, cheap to cache and compare):

* ``("expr", e)`` — a sympy expression (numbers, symbols, matrices);
* ``("text", s)`` — words that are not mathematics (``\\text{Evelyn}``, ``odd``);
* ``("list", items)`` — several answers (``1, 2``; ``6 and 8``); unordered against lists and sets;
* ``("set", items)`` — ``\\{…\\}`` or ``a ± b``;
* ``("tuple", items)`` — ``(a, b, c)``: ordered; a 2-tuple with round brackets may also be an open
  interval, so it is kept as a tuple and compared against intervals as one;
* ``("interval", lo, hi, lo_closed, hi_closed)`` and ``("union", [intervals])``;
* ``("eq", lhs, rhs, lhs_is_name)`` — an equation; ``x = 3`` with a plain name on the left is an
  assignment whose value is the right side;
* ``("rel", op, lhs, rhs)`` — an inequality or ``≠``;
* ``("chain", lo, mid, hi, lo_closed, hi_closed)`` — ``lo < mid ≤ hi`` whose middle is not a plain
  name (``1 ≤ |z| ≤ 3/2``): compared as the set of real values it allows;
* ``("pct", node)`` — a number written with ``%``: it matches the number and the number / 100;
* ``("deg", node)`` — a number written with ``°``: it matches the number and the angle in radians;
* ``("dcomma", node, decimal)`` — ``1,22``: a list of two integers that may be a decimal comma; it
  is read as the decimal when the other answer is a single number.
"""

from __future__ import annotations

import functools
import re

import sympy as sp

from .latex import PM, ParseError, parse_expr
from .normalize import canonical_text, normalize

MAX_ANSWER_CHARS = 4000  # a final answer longer than this is not an answer (and not worth sympy)
_OPEN, _CLOSE = "([{", ")]}"
_WORD = re.compile(r"^(?!(?:sqrt|pi|sin|cos|tan|log|ln|exp|infty|inf)$)[A-Za-z]{3,}$")
_REL_RE = re.compile(r"\\leq|\\geq|\\neq|\\approx|\\in(?![a-zA-Z])|\\equiv|<|>|=")
_DEGREE_TAIL = re.compile(r"(?:\^\s*\{?\s*\\circ\s*\}?|\\degree|°)[\s}$.]*$")
_NUMBER_WORDS = {w: k for k, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                      "ninety": 90, "hundred": 100, "thousand": 1000})
_PERCENT_TAIL = re.compile(r"(?:\\%|%|\s(?:percent(?:age)?|pct))[\s}$.]*$")
# two integers joined by a comma that cannot be thousands grouping: 1,22  1000,99  0,111  12,5
_DECIMAL_COMMA = re.compile(r"^([+-]?)(\d+),(\d+)$")
_CONNECT = re.compile(r"\\text\{\s*(?:and|or|,)\s*\}|\s+(?:and|or)\s+|(?<=[\d)}])\s*(?:and|or)\s*(?=[\d(\\a-zA-Z])")


def _top_level_split(s: str, seps: re.Pattern) -> list[tuple[str, str]]:
    """Split ``s`` at matches of ``seps`` that are outside every bracket and environment."""
    depth, start, i, n = 0, 0, 0, len(s)
    out = []
    while i < n:
        c = s[i]
        if s.startswith("\\lset", i) or s.startswith("\\begin", i):
            depth += 1; i += 5; continue
        if s.startswith("\\rset", i) or s.startswith("\\end", i):
            depth -= 1; i += 4; continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0:
            m = seps.match(s, i)
            if m and m.end() > i:
                out.append((s[start:i], m.group(0)))
                start = i = m.end()
                continue
        i += 1
    out.append((s[start:], ""))
    return out


def _split_items(s: str) -> list[str]:
    return [p.strip() for p, _ in _top_level_split(s, re.compile(r",|;")) if p.strip()]


def _enclosed(s: str) -> bool:
    """True when the first bracket of ``s`` closes at its last character."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def _expr(s: str):
    e = parse_expr(s)
    if e.has(PM):
        return ("set", (("expr", e.subs(PM, 1)), ("expr", e.subs(PM, -1))))
    return ("expr", e)


def _is_name(s: str) -> bool:
    """A left side that names the answer (``x``, ``f(x)``, ``(p,q)``, ``V_1:V_2``), not an expression
    with numbers in it (``7 = 11a + c`` is an equation, not an assignment)."""
    if ":" in s or "," in s:
        return True
    try:
        e = parse_expr(s)
    except ParseError:
        return True
    if isinstance(e, sp.MatrixBase):
        return False
    return bool(e.free_symbols) and not any(abs(a) != 1 for a in e.atoms(sp.Number))


def parse_item(s: str):
    """One answer (no top-level list separators) → node."""
    s = s.strip()
    if not s:
        raise ParseError("empty answer")
    if s in ("\\emptyset", "\\lset \\rset", "\\lset\\rset"):
        return ("set", ())
    if "\\cup" in s:
        parts = [p for p, _ in _top_level_split(s, re.compile(r"\\cup"))]
        if len(parts) > 1:
            items = [parse_item(p) for p in parts]
            if all(i[0] in ("interval", "tuple", "set") for i in items):
                return ("union", tuple(items))
    rels = _top_level_split(s, _REL_RE)
    if len(rels) > 1:
        return _relation(rels)
    if s[0] == "{" and _enclosed(s):  # bare braces group: {1,3} is the list 1, 3
        inner = _split_items(s[1:-1])
        return parse_item(inner[0]) if len(inner) == 1 else ("list", tuple(parse_item(p) for p in inner))
    if _WORD.match(s):  # a word answer: "odd", "Evelyn"; a number word is the number
        if s.lower() in _NUMBER_WORDS:
            return ("expr", sp.Integer(_NUMBER_WORDS[s.lower()]))
        return ("text", s.lower())
    if s.startswith("\\lset") and s.endswith("\\rset"):
        return ("set", tuple(parse_item(p) for p in _split_items(s[5:-5])))
    if s[0] in "([" and s[-1] in ")]" and _enclosed(s):
        inner = _split_items(s[1:-1])
        if len(inner) == 2 and (s[0] == "[" or s[-1] == "]"):
            lo, hi = parse_item(inner[0]), parse_item(inner[1])
            return ("interval", lo, hi, s[0] == "[", s[-1] == "]")
        if len(inner) >= 2:
            return ("tuple", tuple(parse_item(p) for p in inner))
    if ":" in s and not s.startswith("\\"):
        a, _, b = s.partition(":")
        try:
            num, den = parse_expr(a), parse_expr(b)
            if den != 0:
                return ("expr", num / den)
        except ParseError:
            pass
        return ("text", canonical_text(s))
    try:
        return _expr(s)
    except (ParseError, ValueError, TypeError, ZeroDivisionError, RecursionError, sp.SympifyError) as e:
        if isinstance(e, RecursionError):
            raise ParseError("too deep") from None
        return ("text", canonical_text(s))


def _relation(rels):
    parts = [p.strip() for p, _ in rels]
    ops = [op for _, op in rels[:-1]]
    if "\\in" in ops:  # x \in S  → S
        return parse_item(parts[ops.index("\\in") + 1])
    if "\\approx" in ops and "=" in ops[:ops.index("\\approx")]:  # x = 1/3 ≈ 0.33: the exact value counts
        k = ops.index("\\approx")
        parts, ops = parts[:k + 1], ops[:k]
    if ops == ["\\approx"]:  # √3/3 ≈ 0.577: the exact value is the answer; x ≈ 0.577 is x = 0.577
        lhs = parse_item(parts[0])
        if lhs[0] == "expr" and not isinstance(lhs[1], sp.MatrixBase) and lhs[1].is_number:
            return lhs
    ops = ["=" if o in ("\\approx", "\\equiv") else o for o in ops]
    if all(o == "=" for o in ops):
        if len(parts) > 2:  # x = 5 + 5 + 1 = 11: the last value is the answer
            return parse_item(parts[-1])
        lhs, rhs = parse_item(parts[0]), parse_item(parts[1])
        if (lhs[0] == "expr" and rhs[0] == "expr" and not isinstance(lhs[1], sp.MatrixBase)
                and not isinstance(rhs[1], sp.MatrixBase) and not lhs[1].free_symbols and not rhs[1].free_symbols):
            return rhs  # "1/2 = 10/9": a worked computation; the last value is the answer
        return ("eq", lhs, rhs, _is_name(parts[0]))
    if len(parts) == 3 and len(ops) == 2:  # a < x ≤ b
        lt = {"<", "\\leq"}
        gt = {">", "\\geq"}
        if set(ops) <= lt or set(ops) <= gt:
            lo, mid, hi = parse_item(parts[0]), parse_item(parts[1]), parse_item(parts[2])
            closed = [o in ("\\leq", "\\geq") for o in ops]
            if set(ops) <= gt:
                lo, hi, closed = hi, lo, closed[::-1]
            # 1 ≤ |z| ≤ 3/2 is not [1, 3/2]; 0 < f(x) < 1 (a range) is (0, 1)
            if mid[0] == "expr" and not isinstance(mid[1], (sp.Symbol, sp.core.function.AppliedUndef)):
                return ("chain", lo, mid, hi, closed[0], closed[1])
            return ("interval", lo, hi, closed[0], closed[1])
    if len(parts) == 2:
        op, lhs, rhs = ops[0], parts[0], parts[1]
        if op in ("<", ">", "\\leq", "\\geq"):
            left, right = parse_item(lhs), parse_item(rhs)
            # x > 5 with a plain name on one side is the interval (5, ∞)
            for name, other, flip in ((left, right, False), (right, left, True)):
                if name[0] == "expr" and isinstance(name[1], sp.Symbol) and other[0] == "expr":
                    upper = (op in ("<", "\\leq")) != flip
                    closed = op in ("\\leq", "\\geq")
                    inf = ("expr", sp.oo if not upper else -sp.oo)
                    return ("interval", inf, other, False, closed) if upper else ("interval", other, inf, closed, False)
            iv = _linear_interval(op, left, right)
            return iv if iv is not None else ("rel", op, left, right)
        return ("rel", op, parse_item(lhs), parse_item(rhs))
    return ("text", canonical_text(" ".join(parts)))


def _linear_interval(op, left, right):
    """``-x > -1`` → the interval (-∞, 1): inequalities linear in one variable become intervals."""
    if left[0] != "expr" or right[0] != "expr" or isinstance(left[1], sp.MatrixBase):
        return None
    d = left[1] - right[1]
    if len(d.free_symbols) != 1:
        return None
    x = next(iter(d.free_symbols))
    a = d.diff(x)
    c = sp.expand(d - a * x)
    if not a.is_number or a == 0 or c.free_symbols:
        return None
    bound = ("expr", -c / a)
    upper = (op in ("<", "\\leq")) == bool(a > 0)  # x below the bound
    closed = op in ("\\leq", "\\geq")
    if upper:
        return ("interval", ("expr", -sp.oo), bound, False, closed)
    return ("interval", bound, ("expr", sp.oo), closed, False)


def _assignment_name(node):
    """The name an item assigns to (``p`` of ``p = 5``), or None."""
    if node[0] == "eq" and node[3] and node[1][0] == "expr" and isinstance(node[1][1], sp.Symbol):
        return node[1][1]
    return None


def _solutions(groups):
    """Solutions written as named values: ``p=5,q=2;p=7,q=2`` (or with commas only, the names
    repeating in the same order) are the tuples (5, 2), (7, 2). ``None`` when the items are not
    such a pattern."""
    flat = [n for g in groups for n in g]
    names = [_assignment_name(n) for n in flat]
    if len(flat) < 2 or None in names:
        return None
    if len(groups) == 1:  # p=5, q=2, p=7, q=2: split where the first name comes back
        k = names.index(names[0], 1) if names.count(names[0]) > 1 else len(names)
        if k < 2 or len(names) % k or any(names[i] != names[i % k] for i in range(len(names))):
            return None
        groups = [flat[i:i + k] for i in range(0, len(flat), k)]
    if len(groups) < 2 or any(len(g) < 2 for g in groups):
        return None
    order = [_assignment_name(n) for n in groups[0]]
    if len(set(order)) != len(order) or any([_assignment_name(n) for n in g] != order for g in groups):
        return None
    return ("list", tuple(("tuple", tuple(n[2] for n in g)) for g in groups))


def _parse_items(s: str):
    groups = [_split_items(part) for part, _ in _top_level_split(s, re.compile(";"))]
    groups = [g for g in groups if g]
    if not groups:
        return ("text", "")
    parsed = [[parse_item(i) for i in g] for g in groups]
    named = _solutions(parsed)
    if named is not None:
        return named
    items = [n for g in parsed for n in g]
    return items[0] if len(items) == 1 else ("list", tuple(items))


@functools.lru_cache(maxsize=4096)
def parse_answer(text: str):
    """Normalise and parse one extracted answer string (cached: gold answers repeat)."""
    s = normalize(text)
    if len(s) > MAX_ANSWER_CHARS:
        return ("text", s[:64])
    s = _CONNECT.sub(",", s)
    node = _parse_items(s)
    if node[0] == "expr" and not isinstance(node[1], sp.MatrixBase) and node[1].is_number:
        if _PERCENT_TAIL.search(text):
            return ("pct", node)
        if _DEGREE_TAIL.search(text):
            return ("deg", node)
    m = _DECIMAL_COMMA.match(s)
    if m and not (len(m.group(3)) == 3 and len(m.group(2)) <= 3 and m.group(2)[0] != "0"):
        return ("dcomma", node, _expr(f"{m.group(1)}{m.group(2)}.{m.group(3)}"))
    return node

"""Decide whether two parsed answers are mathematically the same.

Numbers compare exactly, or at ``precision`` decimal places when one is written as a decimal (see
:mod:`verifiers.math.numbers`); expressions by structure, then by evaluating the difference at a few
random points (bounded effort — no unbounded ``simplify``), then by a small ``simplify`` only for
expressions without numeric values (``f(x)``). Lists and sets are unordered, tuples ordered,
intervals by endpoints and closedness, equations up to a non-zero factor, inequalities up to a
positive factor; an inequality in one variable, an interval and a union of intervals compare as the
sets of real numbers they describe. ``strict=False`` also accepts renamed variables.

This module runs inside the worker processes of :mod:`verifiers.workers`; :func:`judge` is the
entry point. Nothing here is protected by a time limit of its own.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Optional

import sympy as sp

from .latex import PM, ParseError
from .numbers import DEFAULT_PRECISION, check_precision, decimals_agree
from .sets import SET_LIKE, real_sets_equal, set_like
from .structure import parse_answer

REL_TOL = 1e-6  # for expressions with variables, compared at random points
_FLIP = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq"}
_MAX_RENAMED = 4  # strict=False tries every renaming of up to this many variables (24 at most)


@dataclass(frozen=True)
class Options:
    """How lenient a comparison is: ``precision`` decimal places for decimal answers, and whether
    variable names must match (``strict``)."""

    precision: int = DEFAULT_PRECISION
    strict: bool = True


DEFAULT = Options()


def judge(gold: str, pred: str, precision: Optional[int] = None, strict: bool = True) -> bool:
    """True when the extracted answers ``gold`` and ``pred`` are equivalent."""
    opt = Options(check_precision(precision), bool(strict))
    try:
        a, b = parse_answer(gold), parse_answer(pred)
    except (ParseError, RecursionError, ValueError, TypeError):
        return False
    if equal(a, b, opt):
        return True
    return not opt.strict and _renamed_equal(a, b, opt)


def _symbols(node, out: set) -> set:
    """Free symbols of every expression in an answer node (sign markers and opaque numbers aside)."""
    for x in node:
        if isinstance(x, tuple):
            _symbols(x, out)
        elif isinstance(x, sp.Basic):
            out.update(v for v in x.free_symbols if v != PM and not v.name.startswith("big["))
    return out


def _rename(node, mapping: dict):
    return tuple(_rename(x, mapping) if isinstance(x, tuple) else
                 x.xreplace(mapping) if isinstance(x, sp.Basic) else x for x in node)


def _renamed_equal(a, b, opt) -> bool:
    """``strict=False``: the same answer up to the names of its variables (``f(x)`` vs ``f(y)``)."""
    sa, sb = sorted(_symbols(a, set()), key=str), sorted(_symbols(b, set()), key=str)
    if len(sa) != len(sb) or not sa or len(sa) > _MAX_RENAMED:
        return False
    return any(equal(a, _rename(b, dict(zip(sb, perm))), opt) for perm in itertools.permutations(sa))


def _unwrap(x):
    while x[0] in ("list", "set") and len(x[1]) == 1:
        x = x[1][0]
    return x


def _value(x):
    """The value an assignment ``x = 3`` stands for."""
    if x[0] == "eq" and x[3]:
        return x[2]
    return x


def equal(a, b, opt=DEFAULT) -> bool:
    """Equivalence of two answer nodes (see the module docstring)."""
    a, b = _unwrap(a), _unwrap(b)
    ka, kb = a[0], b[0]
    if ka in ("pct", "deg") or kb in ("pct", "deg"):
        return _unit_equal(a, b, opt)
    if ka == "dcomma" or kb == "dcomma":
        d, o = (a, b) if ka == "dcomma" else (b, a)
        return equal(d[1], o, opt) or (_single_number(o) and equal(d[2], o, opt))
    if ka == "eq" and kb == "eq":
        if _equations_equal(a, b, opt) or _definitions_equal(a, b, opt):
            return True
        return a[3] and b[3] and equal(a[1], b[1], opt) and equal(a[2], b[2], opt)
    if ka == "eq" or kb == "eq":
        va, vb = _value(a), _value(b)
        return (va is not a or vb is not b) and equal(va, vb, opt)
    if ka in ("list", "set") or kb in ("list", "set"):
        if _collection_equal(a, b, opt):
            return True
        # x < 1 or x > 2 against (-∞, 1) ∪ (2, ∞): a list of conditions is their union
        return "union" in (ka, kb) and set_like(a) and set_like(b) and \
            real_sets_equal(a, b, lambda x, y: expr_equal(x, y, opt))
    if ka == "tuple" and kb == "tuple":
        return len(a[1]) == len(b[1]) and all(equal(x, y, opt) for x, y in zip(a[1], b[1]))
    if "tuple" in (ka, kb) and "interval" in (ka, kb):  # (a, b) may be an open interval
        t, iv = (a, b) if ka == "tuple" else (b, a)
        return len(t[1]) == 2 and not iv[3] and not iv[4] and equal(t[1][0], iv[1], opt) and equal(t[1][1], iv[2], opt)
    if ka == "interval" and kb == "interval":
        return a[3] == b[3] and a[4] == b[4] and equal(a[1], b[1], opt) and equal(a[2], b[2], opt)
    if ka == "union" and kb == "union" and len(a[1]) == len(b[1]) and _match_all(a[1], b[1], opt):
        return True
    if ka == "rel" and kb == "rel" and _relations_equal(a, b, opt):
        return True
    if set_like(a) and set_like(b) and (ka in SET_LIKE or kb in SET_LIKE):
        return real_sets_equal(a, b, lambda x, y: expr_equal(x, y, opt))
    if ka == "expr" and kb == "expr":
        return expr_equal(a[1], b[1], opt)
    if ka == "text" or kb == "text":
        return _text(a) == _text(b)
    if "tuple" in (ka, kb) and "expr" in (ka, kb):  # a column vector written as a tuple
        t, e = (a, b) if ka == "tuple" else (b, a)
        m = e[1]
        if isinstance(m, sp.MatrixBase) and 1 in m.shape and len(m) == len(t[1]):
            return all(equal(x, ("expr", y), opt) for x, y in zip(t[1], list(m)))
    return False


def _single_number(node) -> bool:
    return node[0] in _SCALE or (node[0] == "expr" and not isinstance(node[1], sp.MatrixBase)
                                and node[1].is_number)


_SCALE = {"pct": sp.Rational(1, 100), "deg": sp.pi / 180}


def _unit_equal(a, b, opt) -> bool:
    """``28\\%`` is 28 and 0.28; ``45°`` is 45 and π/4. Two numbers with the same mark compare as
    numbers; a percentage and an angle never match."""
    p, o = (a, b) if a[0] in _SCALE else (b, a)
    if o[0] == p[0]:
        return equal(p[1], o[1], opt)
    if o[0] in _SCALE:
        return False
    return equal(p[1], o, opt) or equal(("expr", p[1][1] * _SCALE[p[0]]), o, opt)


def _definitions_equal(a, b, opt) -> bool:
    """``f(n) = 2n`` and ``f(x) = 2x`` define the same function: the argument is a bound name."""
    fa, fb = a[1], b[1]
    if fa[0] != "expr" or fb[0] != "expr" or not a[3] or not b[3]:
        return False
    fa, fb = fa[1], fb[1]
    if not (isinstance(fa, sp.core.function.AppliedUndef) and isinstance(fb, sp.core.function.AppliedUndef)):
        return False
    if fa.func != fb.func or len(fa.args) != len(fb.args) or fa.args == fb.args:
        return False
    if not all(isinstance(x, sp.Symbol) for x in fa.args + fb.args) or len(set(fb.args)) != len(fb.args):
        return False
    return equal(a[2], _rename(b[2], dict(zip(fb.args, fa.args))), opt)


def _text(x) -> str:
    if x[0] == "text":
        return x[1]
    if x[0] == "expr":
        return str(x[1]).lower().replace(" ", "").replace("*", "").replace("exp(1)", "e")
    return repr(x)


def _collection_equal(a, b, opt) -> bool:
    ka, kb = a[0], b[0]
    if "tuple" in (ka, kb):  # a bare list against a tuple keeps its order: (1, 3) vs 1, 3
        items_a = a[1] if ka in ("list", "set", "tuple") else (a,)
        items_b = b[1] if kb in ("list", "set", "tuple") else (b,)
        if "set" not in (ka, kb):
            if len(items_a) == len(items_b) and all(equal(x, y, opt) for x, y in zip(items_a, items_b)):
                return True
            # or the tuple is one item of the list: (1, 2) vs (1, 2), (1, 2)
            items_a, items_b = ((a,) if ka == "tuple" else items_a), ((b,) if kb == "tuple" else items_b)
            return len(items_a) != len(items_b) and _match_all(_dedupe(items_a, opt), _dedupe(items_b, opt), opt)
        return _match_all(_dedupe(items_a, opt), _dedupe(items_b, opt), opt)
    items_a = tuple(_value(x) for x in a[1]) if ka in ("list", "set") else (a,)
    items_b = tuple(_value(x) for x in b[1]) if kb in ("list", "set") else (b,)
    # several answers are a set: order and repeats do not matter (MATH "enter all solutions")
    items_a, items_b = _dedupe(_flatten(items_a), opt), _dedupe(_flatten(items_b), opt)
    return len(items_a) == len(items_b) and _match_all(items_a, items_b, opt)


def _flatten(items):
    out = []
    for x in items:
        x = _unwrap(x)
        out.extend(x[1] if x[0] in ("list", "set") else (x,))
    return tuple(out)


def _dedupe(items, opt):
    out = []
    for x in items:
        if not any(equal(x, y, opt) for y in out):
            out.append(x)
    return tuple(out)


def _match_all(xs, ys, opt) -> bool:
    """A one-to-one matching of ``xs`` onto ``ys`` (greedy; answers are short)."""
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        for k, y in enumerate(left):
            if equal(x, y, opt):
                del left[k]
                break
        else:
            return False
    return True


def _diff(node):
    if node[0] != "eq" or node[1][0] != "expr" or node[2][0] != "expr":
        return None
    return node[1][1] - node[2][1]


def _equations_equal(a, b, opt) -> bool:
    """``lhs - rhs`` of one is a non-zero constant multiple of the other's."""
    da, db = _diff(a), _diff(b)
    if da is None or db is None or isinstance(da, sp.MatrixBase) or isinstance(db, sp.MatrixBase):
        return False
    if da == db or da == -db:
        return True
    if not (da.free_symbols and db.free_symbols) or db == 0:
        return False
    ratio = sp.cancel(da / db)
    return bool(ratio.is_number and ratio != 0 and ratio.is_finite)


def _relations_equal(a, b, opt) -> bool:
    oa, la, ra = a[1], a[2], a[3]
    ob, lb, rb = b[1], b[2], b[3]
    if oa in _FLIP and ob in _FLIP and oa != ob:
        ob, lb, rb = _FLIP[ob], rb, lb
    if oa != ob or any(x[0] != "expr" for x in (la, ra, lb, rb)):
        return oa == ob and equal(la, lb, opt) and equal(ra, rb, opt)
    da, db = la[1] - ra[1], lb[1] - rb[1]
    if da == db:
        return True
    if db == 0:
        return False
    ratio = sp.cancel(da / db)
    if not ratio.is_number:
        return False
    return bool(ratio > 0) if oa != "\\neq" else ratio != 0


def _log10_size(e, depth=0) -> float:
    """A cheap upper estimate of log10|e| for numeric powers, to refuse evaluating 9^(9^(9^9))."""
    if depth > 50:
        return math.inf
    if isinstance(e, sp.Pow) and e.base.is_number:
        eb = _log10_size(e.base, depth + 1)
        ee = _log10_size(e.exp, depth + 1)
        if ee > 300:
            return math.inf
        return abs(10 ** ee) * max(eb, 1.0)
    if isinstance(e, sp.factorial):
        n = _log10_size(e.args[0], depth + 1)
        return math.inf if n > 5 else 10 ** n * n
    if e.is_Number:
        try:
            return math.log10(abs(float(e)) + 1)
        except (OverflowError, ValueError):
            return math.inf
    if e.args:
        return sum(_log10_size(a, depth + 1) for a in e.args)
    return 1.0


def too_big(e) -> bool:
    """True when evaluating ``e`` numerically would mean computing an astronomically large number."""
    return _log10_size(e) > 1e5


def expr_equal(a, b, opt=DEFAULT) -> bool:
    """Equivalence of two sympy expressions (or matrices)."""
    if a == b:
        return True
    am, bm = isinstance(a, sp.MatrixBase), isinstance(b, sp.MatrixBase)
    if am or bm:
        return am and bm and a.shape == b.shape and all(expr_equal(x, y, opt) for x, y in zip(a, b))
    if too_big(a) or too_big(b):
        return False  # structurally different and too large to evaluate
    if a.is_Rational and b.is_Rational:
        return False
    fa, fb = a.free_symbols, b.free_symbols
    if not fa and not fb:
        return _num_close(a, b, opt)
    if a.has(sp.Sum, sp.Product) or b.has(sp.Sum, sp.Product):
        return False  # structurally different sums: evaluating them symbolically is unbounded
    if any(isinstance(f, sp.core.function.AppliedUndef) for f in (a - b).atoms(sp.Function)):
        try:  # f(x) cannot be evaluated at points; expanding the difference is the bounded check
            return sp.expand(a - b) == 0
        except Exception:  # noqa: BLE001 - sympy raises many kinds of errors on odd input
            return False
    return _random_points_equal(a, b, fa | fb, REL_TOL)


def _num_close(a, b, opt) -> bool:
    """Two numbers: equal exactly (to 30 digits) unless one holds a decimal, then at ``opt.precision``."""
    try:
        x, y = sp.N(a, 30), sp.N(b, 30)
        diff, scale = float(abs(x - y)), max(float(abs(x)), float(abs(y)))
    except (TypeError, ValueError, OverflowError):
        return False
    if math.isnan(diff) or math.isnan(scale):
        return False
    if math.isinf(scale):
        return complex(x) == complex(y)
    if a.has(sp.Float) or b.has(sp.Float):
        return decimals_agree(diff, scale, opt.precision)
    return diff <= 1e-20 * max(scale, 1.0)


def _random_points_equal(a, b, symbols, tol) -> bool:
    """Evaluate both at random points of both signs: equal expressions agree wherever both are real.

    Points where either side is undefined or not real are skipped (``\\sqrt{x}`` at x < 0); at least
    two points must agree and none may disagree. Negative points are what tell ``|x|`` from ``x``.
    """
    rng = random.Random(12345)
    symbols = sorted(symbols, key=str)
    agreed = 0
    for k in range(8):
        sign = 1 if k % 2 == 0 else -1
        point = {s: sp.Float(sign * rng.uniform(0.2, 2.3), 30) for s in symbols}
        try:
            x = complex(a.evalf(30, subs=point))
            y = complex(b.evalf(30, subs=point))
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            continue
        if any(map(math.isnan, (x.real, x.imag, y.real, y.imag))) or math.isinf(abs(x)) or math.isinf(abs(y)):
            continue
        scale = max(abs(x), abs(y), 1e-9)
        if sign < 0 and (abs(x.imag) > tol * scale or abs(y.imag) > tol * scale):
            continue  # outside the real domain of one side
        if abs(x - y) > tol * scale and abs(x - y) > 1e-10:
            return False
        agreed += 1
    return agreed >= 2


"""Decide whether two parsed answers are mathematically the same.

Numbers compare with a relative tolerance (exact rationals compare exactly first); expressions by
structure, then by evaluating the difference at a few random points (bounded effort — no unbounded
``simplify``), then by a small ``simplify`` only for expressions without numeric values (``f(x)``).
Lists and sets are unordered, tuples ordered, intervals by endpoints and closedness, equations up
to a non-zero factor, inequalities up to a positive factor.

This module runs inside the worker processes of :mod:`verifiers.workers`; :func:`judge` is the
entry point. Nothing here is protected by a time limit of its own.
"""

from __future__ import annotations

import math
import random

import sympy as sp

from .latex import ParseError
from .structure import parse_answer

REL_TOL = 1e-6
_FLIP = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq"}


def judge(gold: str, pred: str, rel_tol: float = REL_TOL) -> bool:
    """True when the extracted answers ``gold`` and ``pred`` are equivalent."""
    try:
        a, b = parse_answer(gold), parse_answer(pred)
    except (ParseError, RecursionError, ValueError, TypeError):
        return False
    return equal(a, b, rel_tol)


def _unwrap(x):
    while x[0] in ("list", "set") and len(x[1]) == 1:
        x = x[1][0]
    return x


def _value(x):
    """The value an assignment ``x = 3`` stands for."""
    if x[0] == "eq" and x[3]:
        return x[2]
    return x


def equal(a, b, tol=REL_TOL) -> bool:
    """Equivalence of two answer nodes (see the module docstring)."""
    a, b = _unwrap(a), _unwrap(b)
    ka, kb = a[0], b[0]
    if ka == "eq" and kb == "eq":
        if _equations_equal(a, b, tol):
            return True
        return a[3] and b[3] and equal(a[1], b[1], tol) and equal(a[2], b[2], tol)
    if ka == "eq" or kb == "eq":
        va, vb = _value(a), _value(b)
        return (va is not a or vb is not b) and equal(va, vb, tol)
    if ka in ("list", "set") or kb in ("list", "set"):
        return _collection_equal(a, b, tol)
    if ka == "tuple" and kb == "tuple":
        return len(a[1]) == len(b[1]) and all(equal(x, y, tol) for x, y in zip(a[1], b[1]))
    if "tuple" in (ka, kb) and "interval" in (ka, kb):  # (a, b) may be an open interval
        t, iv = (a, b) if ka == "tuple" else (b, a)
        return len(t[1]) == 2 and not iv[3] and not iv[4] and equal(t[1][0], iv[1], tol) and equal(t[1][1], iv[2], tol)
    if ka == "interval" and kb == "interval":
        return a[3] == b[3] and a[4] == b[4] and equal(a[1], b[1], tol) and equal(a[2], b[2], tol)
    if ka == "union" and kb == "union":
        return len(a[1]) == len(b[1]) and _match_all(a[1], b[1], tol)
    if ka == "rel" and kb == "rel":
        return _relations_equal(a, b, tol)
    if ka == "expr" and kb == "expr":
        return expr_equal(a[1], b[1], tol)
    if ka == "text" or kb == "text":
        return _text(a) == _text(b)
    if "tuple" in (ka, kb) and "expr" in (ka, kb):  # a column vector written as a tuple
        t, e = (a, b) if ka == "tuple" else (b, a)
        m = e[1]
        if isinstance(m, sp.MatrixBase) and 1 in m.shape and len(m) == len(t[1]):
            return all(equal(x, ("expr", y), tol) for x, y in zip(t[1], list(m)))
    return False


def _text(x) -> str:
    if x[0] == "text":
        return x[1]
    if x[0] == "expr":
        return str(x[1]).lower().replace(" ", "").replace("*", "").replace("exp(1)", "e")
    return repr(x)


def _collection_equal(a, b, tol) -> bool:
    ka, kb = a[0], b[0]
    if "tuple" in (ka, kb):  # a bare list against a tuple keeps its order: (1, 3) vs 1, 3
        items_a = a[1] if ka in ("list", "set", "tuple") else (a,)
        items_b = b[1] if kb in ("list", "set", "tuple") else (b,)
        if "set" not in (ka, kb):
            return len(items_a) == len(items_b) and all(equal(x, y, tol) for x, y in zip(items_a, items_b))
        return _match_all(_dedupe(items_a, tol), _dedupe(items_b, tol), tol)
    items_a = tuple(_value(x) for x in a[1]) if ka in ("list", "set") else (a,)
    items_b = tuple(_value(x) for x in b[1]) if kb in ("list", "set") else (b,)
    # several answers are a set: order and repeats do not matter (MATH "enter all solutions")
    items_a, items_b = _dedupe(_flatten(items_a), tol), _dedupe(_flatten(items_b), tol)
    return len(items_a) == len(items_b) and _match_all(items_a, items_b, tol)


def _flatten(items):
    out = []
    for x in items:
        x = _unwrap(x)
        out.extend(x[1] if x[0] in ("list", "set") else (x,))
    return tuple(out)


def _dedupe(items, tol):
    out = []
    for x in items:
        if not any(equal(x, y, tol) for y in out):
            out.append(x)
    return tuple(out)


def _match_all(xs, ys, tol) -> bool:
    """A one-to-one matching of ``xs`` onto ``ys`` (greedy; answers are short)."""
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        for k, y in enumerate(left):
            if equal(x, y, tol):
                del left[k]
                break
        else:
            return False
    return True


def _diff(node):
    if node[0] != "eq" or node[1][0] != "expr" or node[2][0] != "expr":
        return None
    return node[1][1] - node[2][1]


def _equations_equal(a, b, tol) -> bool:
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


def _relations_equal(a, b, tol) -> bool:
    oa, la, ra = a[1], a[2], a[3]
    ob, lb, rb = b[1], b[2], b[3]
    if oa in _FLIP and ob in _FLIP and oa != ob:
        ob, lb, rb = _FLIP[ob], rb, lb
    if oa != ob or any(x[0] != "expr" for x in (la, ra, lb, rb)):
        return oa == ob and equal(la, lb, tol) and equal(ra, rb, tol)
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


def expr_equal(a, b, tol=REL_TOL) -> bool:
    """Equivalence of two sympy expressions (or matrices)."""
    if a == b:
        return True
    am, bm = isinstance(a, sp.MatrixBase), isinstance(b, sp.MatrixBase)
    if am or bm:
        return am and bm and a.shape == b.shape and all(expr_equal(x, y, tol) for x, y in zip(a, b))
    if too_big(a) or too_big(b):
        return False  # structurally different and too large to evaluate
    if a.is_Rational and b.is_Rational:
        return False
    fa, fb = a.free_symbols, b.free_symbols
    if not fa and not fb:
        return _num_close(a, b, tol)
    if a.has(sp.Sum, sp.Product) or b.has(sp.Sum, sp.Product):
        return False  # structurally different sums: evaluating them symbolically is unbounded
    if any(isinstance(f, sp.core.function.AppliedUndef) for f in (a - b).atoms(sp.Function)):
        try:  # f(x) cannot be evaluated at points; expanding the difference is the bounded check
            return sp.expand(a - b) == 0
        except Exception:  # noqa: BLE001 - sympy raises many kinds of errors on odd input
            return False
    return _random_points_equal(a, b, fa | fb, tol)


def _num_close(a, b, tol) -> bool:
    try:
        x, y = complex(sp.N(a, 30)), complex(sp.N(b, 30))
    except (TypeError, ValueError, OverflowError):
        return False
    if any(map(math.isnan, (x.real, x.imag, y.real, y.imag))):
        return False
    if math.isinf(abs(x)) or math.isinf(abs(y)):
        return x == y
    return abs(x - y) <= tol * max(abs(x), abs(y)) or abs(x - y) <= 1e-12


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

"""Intervals, unions and one-variable inequalities as the sets of real numbers they describe.

``1 \\le |z| \\le 3/2`` and ``[-3/2, -1] ∪ [1, 3/2]``, ``x ≠ 0`` and ``(-∞, 0) ∪ (0, ∞)``, ``x < 1 or
x > 2`` and ``(-∞, 1) ∪ (2, ∞)`` are the same answers. Each side is turned into a sympy set (an
inequality is solved over the reals in its one variable) and the two are compared component by
component. Runs inside the comparison workers (sympy's solver is not bounded by itself).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from .latex import PM

_RELATIONS = {"<": sp.Lt, ">": sp.Gt, "\\leq": sp.Le, "\\geq": sp.Ge}


SET_LIKE = {"interval", "union", "chain", "rel"}


def set_like(node) -> bool:
    """An interval, union, inequality, an open interval written as a pair ``(a, b)``, or a list of these."""
    if node[0] in SET_LIKE:
        return True
    if node[0] == "tuple":
        return len(node[1]) == 2
    return node[0] == "list" and bool(node[1]) and all(x[0] in SET_LIKE for x in node[1])


def _real_set(node):
    """The set of real numbers an interval, a union or a one-variable inequality describes (or None)."""
    kind = node[0]
    if kind == "interval":
        lo, hi = node[1], node[2]
        if lo[0] != "expr" or hi[0] != "expr" or lo[1].free_symbols or hi[1].free_symbols:
            return None
        return sp.Interval(lo[1], hi[1], not node[3], not node[4])
    if kind == "tuple" and len(node[1]) == 2:
        return _real_set(("interval", node[1][0], node[1][1], False, False))
    if kind in ("union", "list"):
        parts = [_real_set(p) for p in node[1]]
        return None if any(p is None for p in parts) else sp.Union(*parts)
    if kind == "chain":
        lo, mid, hi = node[1], node[2], node[3]
        if any(x[0] != "expr" for x in (lo, mid, hi)):
            return None
        lower = sp.Le(lo[1], mid[1]) if node[4] else sp.Lt(lo[1], mid[1])
        upper = sp.Le(mid[1], hi[1]) if node[5] else sp.Lt(mid[1], hi[1])
        return _solve_real(sp.And(lower, upper, evaluate=False), mid[1])
    if kind == "rel" and (node[1] in _RELATIONS or node[1] == "\\neq") and node[2][0] == node[3][0] == "expr":
        lhs, rhs = node[2][1], node[3][1]
        if node[1] == "\\neq":  # x ≠ 0: the reals without the solutions of x = 0
            points = _solve_real(sp.Eq(lhs, rhs, evaluate=False), lhs - rhs)
            return None if points is None else sp.S.Reals - points
        return _solve_real(_RELATIONS[node[1]](lhs, rhs, evaluate=False), lhs - rhs)
    return None


def _solve_real(condition, expr):
    """Solve a condition in the one free variable of ``expr`` over the reals (None if not one)."""
    free = [v for v in expr.free_symbols if v != PM]
    if len(free) != 1 or isinstance(expr, sp.MatrixBase):
        return None
    x = sp.Symbol(free[0].name, real=True)
    condition = condition.xreplace({free[0]: x})
    try:
        parts = condition.args if isinstance(condition, sp.And) else (condition,)
        out = sp.S.Reals
        for c in parts:
            if isinstance(c, sp.Eq):
                out = out.intersect(sp.solveset(c, x, sp.S.Reals))
            else:
                out = out.intersect(sp.solvers.inequalities.solve_univariate_inequality(c, x, relational=False))
        return out
    except (NotImplementedError, TypeError, ValueError, AttributeError):
        return None


def _components(s):
    """A real set as a list of its intervals and points, in sympy's canonical order."""
    parts = list(s.args) if isinstance(s, sp.Union) else [s]
    out = []
    for p in parts:
        if isinstance(p, sp.FiniteSet):
            out.extend(sp.Interval(v, v) for v in p)
        elif isinstance(p, sp.Interval):
            out.append(p)
        else:
            return None
    return out


def real_sets_equal(a, b, endpoints_equal: Callable) -> bool:
    """True when two set-like nodes describe the same set of reals; ``endpoints_equal(x, y)``
    compares two endpoints (the caller's number rule)."""
    sa, sb = _real_set(a), _real_set(b)
    if sa is None or sb is None:
        return False
    ca, cb = _components(sa), _components(sb)
    if ca is None or cb is None or len(ca) != len(cb):
        return False
    return all(x.left_open == y.left_open and x.right_open == y.right_open and endpoints_equal(x.start, y.start)
               and endpoints_equal(x.end, y.end) for x, y in zip(ca, cb))


def _warm_up() -> None:
    """Solve one inequality at import: sympy's solver spends ~0.3 s on its first call (caches), which
    the pool's workers inherit when they fork instead of each paying it inside a timed comparison."""
    try:
        x = sp.Symbol("x")
        _solve_real(sp.Lt(sp.Abs(x - 1), 2), x)
    except Exception:  # noqa: BLE001 - a warm-up must never stop the import
        pass


_warm_up()

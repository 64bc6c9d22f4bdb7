"""When two numbers count as the same answer — one rule, shared by the in-process fast path and the
sympy workers.

Exact numbers (integers, fractions, radicals, π) must be equal. When either side is written as a
decimal, the decimal is read as a rounded value: the two must agree to ``precision`` decimal places
(``|a − b| ≤ ½·10^-precision``, math-verify's ``float_rounding``) *and* to within
``10^(1 − precision)`` relatively, so ``0.0000012`` does not equal ``0.0000015`` merely because
both round to 0 at six places. The default precision is 6: ``1/3 = 0.333333`` and ``0.1 =
0.1000001``, while ``1/3 ≠ 0.333``, ``π ≠ 3.14159`` and ``1000000.1 ≠ 1000000``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional

DEFAULT_PRECISION = 6
_SLACK = Fraction(1, 10**9)  # rounding of the high-precision evaluation itself


def check_precision(precision: Optional[int]) -> int:
    """The precision to use: ``None`` means :data:`DEFAULT_PRECISION`; anything else must be an
    integer from 0 to 30."""
    if precision is None:
        return DEFAULT_PRECISION
    if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 30:
        raise ValueError(f"precision must be an integer number of decimal places from 0 to 30 "
                         f"(or None for the default {DEFAULT_PRECISION}), got {precision!r}")
    return precision


def decimals_agree(diff: float, scale: float, precision: int) -> bool:
    """True when a difference ``diff`` (≥ 0) between two numbers of magnitude ``scale`` (the larger
    absolute value) is within the rounding of a decimal answer at ``precision`` places."""
    absolute = 0.5 * 10.0 ** -precision * (1 + 1e-9)
    return diff <= absolute and diff <= 10.0 ** (1 - precision) * scale * (1 + 1e-9)


def fractions_agree(a: Fraction, b: Fraction, decimal: bool, precision: int) -> bool:
    """:func:`decimals_agree` for exact rationals; ``decimal`` says whether either was written as a
    decimal (otherwise they must be equal)."""
    if a == b:
        return True
    if not decimal:
        return False
    diff, scale = abs(a - b), max(abs(a), abs(b))
    absolute = Fraction(1, 2 * 10**precision) * (1 + _SLACK)
    return diff <= absolute and diff <= Fraction(10, 10**precision) * scale * (1 + _SLACK)

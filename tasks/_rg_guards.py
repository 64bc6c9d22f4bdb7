"""Our own checks in front of reasoning-gym scorers that reward wrong answers or run the answer.

Found by scoring, for every data set, reasoning-gym's gold answers and a battery of junk and wrong
answers (see ``tests/test_reasoning_gym.py`` and docs/audit.md):

* rewards for wrong answers — ``game_of_life_halting`` (``bool("False")`` is True: any non-empty
  answer scores 1), ``coin_flip`` (prefix credit over ``min(len)``: ``0`` scores 1 against
  ``0.3125``), ``complex_arithmetic`` (``nan`` is at distance ``nan``, and ``min(1, e^-nan)`` is 1),
  ``puzzle24`` (only checks that *some* four in-range numbers make 24), ``simple_integration`` and
  ``intermediate_integration`` (they differentiate the answer, so ``Integral(<integrand>, x) + C``,
  the question restated, scores 1 on every task);
* the model's answer run as code in the trainer's process — ``eval(answer)`` in ``n_queens``,
  ``binary_matrix``, ``spiral_matrix``, ``string_insertion``; ``sympy.parse_expr(answer)`` (an
  ``eval``) in ``puzzle24``, ``countdown``, ``simple_integration``, ``intermediate_integration``,
  ``polynomial_multiplication``.

A guard is ``guard(answer, entry) -> reason or None``: a reason rejects the answer (reward 0, the
scorer is never called with it), ``None`` leaves the verdict to the scorer. :data:`UNSOUND` lists
the data sets no check of ours can repair; their envs refuse unless ``allow_unsound_scorer=True``.
"""

from __future__ import annotations

import ast
import cmath
import importlib
from collections import Counter
from fractions import Fraction
from typing import Any, Callable, Optional

from tasks.countdown import ExpressionError, evaluate_expression

Guard = Callable[[str, dict], Optional[str]]

#: data set -> why its scorer cannot be trusted even behind our checks (the env refuses by default)
UNSOUND = {
    "propositional_logic": "its scorer gives full reward to any non-tautological conclusion that follows from the "
                           "premises, so restating a compound premise earns 1.0 (19 of 20 tasks at seed 0), and "
                           "the data set has no gold answer to check against",
}

#: modules whose scorer calls ``eval(answer)``; their ``eval`` is replaced by a literal-only one
EVAL_SCORER_MODULES = ("reasoning_gym.games.n_queens", "reasoning_gym.algorithmic.binary_matrix",
                       "reasoning_gym.algorithmic.spiral_matrix", "reasoning_gym.algorithmic.string_insertion")

MAX_EXPRESSION_CHARS = 2000
MAX_EXPONENT = 1000
#: functions a math answer may call before sympy parses it (sympy's own names for them)
MATH_FUNCTIONS = frozenset({
    "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "acot", "asec", "acsc", "sinh", "cosh",
    "tanh", "coth", "asinh", "acosh", "atanh", "exp", "log", "ln", "sqrt", "cbrt", "root", "Abs", "abs", "sign",
    "atan2", "factorial", "Rational", "Integer", "Float"})
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Call, ast.Add,
                  ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd, ast.FloorDiv, ast.Mod)


def literal_only_eval(source: Any, *_: Any) -> Any:
    """Stand-in for ``eval`` in scorers that read a Python list from the model's answer: literals
    only (``ast.literal_eval``), so an answer can never run code or allocate without bound."""
    return ast.literal_eval(source)


def patch_eval_scorers() -> None:
    """Replace ``eval`` in :data:`EVAL_SCORER_MODULES` (each calls it only in ``score_answer``, on the
    model's answer) by :func:`literal_only_eval`. A literal answer scores exactly as before."""
    for name in EVAL_SCORER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # another reasoning-gym version: nothing to patch there
            continue
        module.eval = literal_only_eval


def plain_math(answer: str) -> Optional[str]:
    """Why ``answer`` is not a plain math expression safe to hand to ``sympy.parse_expr`` (numbers,
    names, ``+ - * / ** ^``, parentheses, calls of :data:`MATH_FUNCTIONS`), or ``None`` when it is.
    No attribute access, subscripts, strings, lambdas or comprehensions (how an ``eval`` escapes);
    no power towers or exponents above :data:`MAX_EXPONENT` (how it hangs)."""
    if len(answer) > MAX_EXPRESSION_CHARS:
        return f"longer than {MAX_EXPRESSION_CHARS} characters"
    try:
        tree = ast.parse(answer.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not a plain math expression"
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            return f"{type(node).__name__} is not allowed in a math answer"
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in MATH_FUNCTIONS or node.keywords:
                return f"calls {name or 'an expression'}, which is not a math function"
        elif isinstance(node, ast.Name) and node.id.startswith("_"):
            return f"name {node.id!r} is not allowed"
        elif isinstance(node, ast.Constant) and type(node.value) not in (int, float):
            return f"constant {node.value!r} is not a number"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            inner = [n for side in (node.left, node.right) for n in ast.walk(side)]
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in inner):
                return "nested powers are not allowed"
            if isinstance(node.right, ast.Constant) and abs(node.right.value) > MAX_EXPONENT:
                return f"exponent above {MAX_EXPONENT}"
    return None


def _plain_math_guard(answer: str, entry: dict) -> Optional[str]:
    return plain_math(answer)


def _arithmetic(answer: str) -> tuple[Optional[str], Any, list]:
    try:
        value, used = evaluate_expression(answer)
    except ExpressionError as e:
        return f"not an arithmetic expression of integers ({e})", None, []
    return None, value, used


def _countdown(answer: str, entry: dict) -> Optional[str]:
    # safety only: the scorer itself checks the numbers and the target
    return _arithmetic(answer)[0] if answer.strip() else None


def _puzzle24(answer: str, entry: dict) -> Optional[str]:
    problem, value, used = _arithmetic(answer)
    if problem:
        return problem
    numbers = entry["metadata"]["numbers"]
    if Counter(used) != Counter(numbers):
        return f"uses {sorted(used)}, must use each of {sorted(numbers)} once"
    return None if value == 24 else f"makes {value}, not 24"


def _same_as_gold(answer: str, entry: dict) -> Optional[str]:
    gold = str(entry["answer"]).strip().lower()
    return None if answer.strip().lower() == gold else f"is not {entry['answer']!r}"


def _probability(answer: str, entry: dict, tol: float = 1e-4) -> Optional[str]:
    try:
        got, want = (float(Fraction(s.replace(",", "").strip())) for s in (answer, entry["answer"]))
    except (ValueError, ZeroDivisionError, OverflowError):
        return "not a number or fraction"
    return None if abs(got - want) <= tol else f"{got:.10g} is not {want:.10g} (±{tol:g})"


def _finite_complex(answer: str, entry: dict) -> Optional[str]:
    from reasoning_gym.algebra.complex_arithmetic import ComplexArithmeticDataset

    try:
        value = ComplexArithmeticDataset.parse_string_to_complex(answer)
    except (ValueError, TypeError, OverflowError):
        return None  # the scorer gives 0 to what it cannot parse
    if value is None or not cmath.isfinite(value):
        return "not a finite complex number"
    return None


#: data set -> our check of the model's answer
GUARDS: dict[str, Guard] = {
    "game_of_life_halting": _same_as_gold,
    "coin_flip": _probability,
    "complex_arithmetic": _finite_complex,
    "puzzle24": _puzzle24,
    "countdown": _countdown,
    "simple_integration": _plain_math_guard,
    "intermediate_integration": _plain_math_guard,
    "polynomial_multiplication": _plain_math_guard,
}


def _clashing_digits(gold: str) -> list:
    # two letters on one digit: never a solution (letters stand for distinct digits)
    pairs = [p.split("=") for p in gold.split(",")]
    if len(pairs) < 2 or any(len(p) != 2 for p in pairs):
        return []
    pairs[1][1] = pairs[0][1]
    return [",".join("=".join(p) for p in pairs)]


def _one_press_more(gold: str) -> list:
    # longer than the shortest sequence: at best "correct but not optimal" (0.5), never 1
    return [f"{gold} → {gold.split('→')[-1].strip()}"] if gold.strip() else []


#: data set -> answers known to be wrong, for data sets where a changed gold answer may be another
#: right one (used by ``rlenv audit`` through the env's ``wrong_answers`` and by the sweep test)
WRONG_ANSWERS: dict[str, Callable[[str], list]] = {"cryptarithm": _clashing_digits, "quantum_lock": _one_press_more}


def guard_for(name: str, entry: dict) -> Optional[Guard]:
    """The guard of the data set that made ``entry`` (a composite's entry names its source)."""
    meta = entry.get("metadata") if isinstance(entry, dict) else None
    source = meta.get("source_dataset", name) if isinstance(meta, dict) else name
    return GUARDS.get(source)


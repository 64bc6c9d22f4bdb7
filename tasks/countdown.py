"""``countdown-v0``: reach the target with the given numbers, each used exactly once.

    env = rlenv.make("countdown-v0", num_numbers=4)
    obs, info = env.reset(seed=0)      # "Using the numbers [3, 7, 25, 50], make 82 ..."
    env.step("<a>50 + 25 + 7</a>")    # 0: 3 unused; "<a>(50 - 25) * 3 + 7</a>" scores 1

The answer is an arithmetic expression with ``+ - * /`` and parentheses. It is checked by walking
its syntax tree with exact rational arithmetic — never ``eval`` — so no expression can run code,
and ``/`` is exact (``7 / 2`` is 7/2, not 3.5 rounded).
"""

from __future__ import annotations

import ast
import operator
import random
from collections import Counter
from fractions import Fraction
from typing import Optional

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.parsers import parse_tag
from rlenv.sources import GeneratorSource
from verifiers.base import CORRECT, INCORRECT, VerifyResult
from verifiers.rubric import Component, Rubric

SYSTEM_PROMPT = ("Combine the numbers with + - * / and parentheses to reach the target, using each "
                 "number exactly once. Reply with only the expression inside <a></a> tags.")
MAX_EXPR_CHARS = 256
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_SYMBOL = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/"}


class ExpressionError(ValueError):
    """The answer is not an expression over the allowed numbers and operators."""


def evaluate_expression(expr: str) -> tuple[Fraction, list[int]]:
    """Value of ``expr`` as an exact fraction and the integer literals it uses.

    Only integer literals, ``+ - * /`` and parentheses are allowed; anything else (names, calls,
    powers, unary minus, floats) raises :class:`ExpressionError`, as does division by zero.
    """
    if len(expr) > MAX_EXPR_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"not an expression: {type(e).__name__}") from None
    leaves: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ExpressionError("division by zero")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            leaves.append(node.value)
            return Fraction(node.value)
        raise ExpressionError(f"{type(node).__name__} is not allowed (only integers, + - * / and parentheses)")

    try:
        value = walk(tree.body)
    except RecursionError:
        raise ExpressionError("expression nested too deeply") from None
    return value, leaves


def generate(rng: random.Random, num_numbers: int = 4, max_number: int = 50,
             max_target: int = 1000) -> rlenv.Task:
    """Pick numbers, combine them in a random order with random operators, keep integer targets."""
    while True:
        nums = [rng.randint(1, max_number) for _ in range(num_numbers)]
        order = nums[:]
        rng.shuffle(order)
        value, expr = Fraction(order[0]), str(order[0])
        for n in order[1:]:
            op = rng.choice(list(_SYMBOL))
            if op is operator.truediv and (n == 0 or (value / n).denominator != 1):
                op = operator.add
            if op is operator.sub and value - n < 0:
                op = operator.add
            value = op(value, Fraction(n))
            expr = f"({expr}) {_SYMBOL[op]} {n}" if op in (operator.mul, operator.truediv) and " " in expr \
                else f"{expr} {_SYMBOL[op]} {n}"
        if value.denominator == 1 and 0 < value <= max_target:
            target = int(value)
            return rlenv.Task(
                prompt=f"Using the numbers {nums}, make {target}.",
                answer=str(target),
                info={"numbers": nums, "target_value": target, "target": f"<a>{expr}</a>"},
            )


def correct(completion: str, task: rlenv.Task) -> VerifyResult:
    """1.0 when the tagged expression uses exactly the given numbers (each once) and equals the target."""
    expr: Optional[str] = parse_tag(completion, "a")
    if expr is None:
        return VerifyResult(0.0, INCORRECT, {"error": "no <a>…</a> answer"})
    try:
        value, used = evaluate_expression(expr)
    except ExpressionError as e:
        return VerifyResult(0.0, INCORRECT, {"error": str(e), "parsed": expr[:80]})
    if Counter(used) != Counter(task.info["numbers"]):
        return VerifyResult(0.0, INCORRECT, {"error": f"uses {sorted(used)}, must use {sorted(task.info['numbers'])}"})
    ok = value == int(task.answer)
    return VerifyResult(float(ok), CORRECT if ok else INCORRECT, {"value": str(value)})


def answer_format(completion: str, task: rlenv.Task) -> float:
    """1.0 when the completion is exactly one ``<a>…</a>`` block."""
    return float(parse_tag(completion, "a", strict=True) is not None)


def make_env(num_numbers: int = 4, max_number: int = 50, max_target: int = 1000, size: int = 100_000,
             seed: int = 0, difficulty: Optional[int] = None, system_prompt: str = SYSTEM_PROMPT) -> SingleTurnEnv:
    """Build the env. ``difficulty`` (0–3), when given, sets ``num_numbers`` to 3 + difficulty."""
    if difficulty is not None:
        if difficulty not in (0, 1, 2, 3):
            raise ValueError(f"countdown-v0: difficulty must be 0, 1, 2 or 3, got {difficulty!r}")
        num_numbers = 3 + difficulty
    if not isinstance(num_numbers, int) or not 2 <= num_numbers <= 8:
        raise ValueError(f"countdown-v0: num_numbers must be an int in [2, 8], got {num_numbers!r}")
    if not isinstance(max_number, int) or max_number < 1:
        raise ValueError(f"countdown-v0: max_number must be a positive int, got {max_number!r}")
    source = GeneratorSource(lambda rng: generate(rng, num_numbers, max_number, max_target),
                             size=size, seed=seed, name="countdown")
    rubric = Rubric([Component(correct, 1.0, name="correct"), Component(answer_format, 0.0, name="format")])
    return SingleTurnEnv(source, rubric, system_prompt=system_prompt)


rlenv.register("countdown-v0", make_env,
               description="reach the target with the given numbers, each once (+ - * /), answer <a>expr</a>")

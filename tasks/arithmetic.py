"""``arithmetic-v0``: two-number arithmetic problems, answered as ``<a>46</a>``.

The first built-in procedural env, small enough for a tiny model on a CPU to learn. One file holds
the config, the generator, the verifiers and the registration (the reasoning-gym layout).

    env = rlenv.make("arithmetic-v0", digits=2, operators="+-*", difficulty=1)
    obs, info = env.reset(seed=0)   # "What is 37 + 9?"
    env.step("<a>46</a>")           # reward 1.0 when 46 is right

Each task carries ``info["target"]``, the ideal completion (``"<a>46</a>"``) for SFT warm-starts.
With ``label_noise=p`` a share ``p`` of the tasks carry a wrong target instead, off by one
(``"<a>47</a>"``): noisy labels that SFT learns faithfully and a verifier does not share.
Rewards: ``correct`` (1 when the tagged integer equals the result) and a weight-0 ``format`` metric
(the completion is exactly one ``<a>…</a>``), logged but not rewarded.
"""

from __future__ import annotations

import random
import re
from typing import Any

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.parsers import parse_tag
from rlenv.sources import GeneratorSource
from verifiers.base import CORRECT, INCORRECT, VerifyResult
from verifiers.rubric import Component, Rubric

TAG = "a"
OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
SYSTEM_PROMPT = "Solve the problem. Reply with only the integer answer inside <a></a> tags, like <a>12</a>."
_INT = re.compile(r"[-+]?\d+")


def generate(rng: random.Random, digits: int = 2, operators: str = "+-", difficulty: int = 1,
             label_noise: float = 0.0) -> rlenv.Task:
    """One problem ``a op b`` with operands of at most ``digits`` digits.

    ``difficulty`` 0: operands from the lower half of the range, results never negative;
    1: the full range, results never negative; 2: negative results allowed. With probability
    ``label_noise`` the SFT target (``info["target"]``) says ``result + 1``; the draw comes after
    the problem's, so the task itself is the same whatever the noise.
    """
    hi = 10 ** digits - 1
    top = hi // 2 if difficulty == 0 else hi
    a, b = rng.randint(0, top), rng.randint(0, top)
    op = rng.choice(operators)
    if op == "-" and difficulty < 2 and b > a:
        a, b = b, a
    result = OPERATORS[op](a, b)
    shown = result + 1 if label_noise and rng.random() < label_noise else result
    return rlenv.Task(
        prompt=f"What is {a} {op} {b}?",
        answer=str(result),
        info={"target": f"<{TAG}>{shown}</{TAG}>", "a": a, "b": b, "op": op, "difficulty": difficulty},
    )


def correct(completion: str, task: rlenv.Task) -> VerifyResult:
    """1.0 when the integer inside the last ``<a>…</a>`` equals the result exactly, else 0.0."""
    pred = parse_tag(completion, TAG)
    ok = pred is not None and _INT.fullmatch(pred) is not None and int(pred) == int(task.answer)
    return VerifyResult(float(ok), CORRECT if ok else INCORRECT, {"parsed": pred})


def answer_format(completion: str, task: rlenv.Task) -> float:
    """1.0 when the completion is exactly one ``<a>integer</a>`` (whitespace aside)."""
    pred = parse_tag(completion, TAG, strict=True)
    return float(pred is not None and _INT.fullmatch(pred) is not None)


def digit_credit(completion: str, task: rlenv.Task) -> float:
    """Partial credit: the fraction of the answer's digits (right-aligned, sign included) that the
    tagged integer gets right in place; 0 without a tagged integer. A denser signal than exact
    match for small models learning carries."""
    pred = parse_tag(completion, TAG)
    if pred is None or _INT.fullmatch(pred) is None:
        return 0.0
    gold, got = task.answer.lstrip("+"), pred.lstrip("+")
    width = max(len(gold), len(got))
    gold, got = gold.rjust(width), got.rjust(width)
    return sum(a == b for a, b in zip(gold, got)) / width


def rubric(partial_credit: float = 0.0) -> Rubric:
    """Correctness rewarded, format logged (weight 0); with ``partial_credit`` > 0 the digit credit
    is added with that weight."""
    parts = [Component(correct, 1.0, name="correct"), Component(answer_format, 0.0, name="format")]
    if partial_credit:
        parts.append(Component(digit_credit, float(partial_credit), name="digits"))
    return Rubric(parts)


class ArithmeticEnv(SingleTurnEnv):
    """The arithmetic env; :meth:`render_answer` tells tools (``rlenv audit``) how a completion
    states an answer — needed because with ``label_noise`` a task's ``info["target"]`` may be wrong."""

    def render_answer(self, task: rlenv.Task, answer: Any) -> str:
        """The completion that states ``answer``: ``<a>answer</a>``."""
        return f"<{TAG}>{answer}</{TAG}>"


def make_env(digits: int = 2, operators: str = "+-", difficulty: int = 1, size: int = 100_000,
             seed: int = 0, system_prompt: str = SYSTEM_PROMPT, few_shot: int = 0,
             partial_credit: float = 0.0, label_noise: float = 0.0) -> ArithmeticEnv:
    """Build the env. ``size`` procedural tasks generated from ``seed`` (task ``i`` is always the
    same); ``few_shot`` solved examples (drawn from another seed) precede each prompt;
    ``partial_credit`` weights the per-digit credit added to the exact-match reward;
    ``label_noise`` is the share of SFT targets that are off by one (the rewards never are)."""
    if not isinstance(digits, int) or not 1 <= digits <= 18:
        raise ValueError(f"arithmetic-v0: digits must be an int in [1, 18], got {digits!r}")
    bad = [o for o in operators if o not in OPERATORS]
    if not operators or bad:
        raise ValueError(f"arithmetic-v0: operators must be a non-empty string of {''.join(OPERATORS)!r}, "
                         f"got {operators!r}")
    if difficulty not in (0, 1, 2):
        raise ValueError(f"arithmetic-v0: difficulty must be 0, 1 or 2, got {difficulty!r}")
    if not isinstance(partial_credit, (int, float)) or partial_credit < 0:
        raise ValueError(f"arithmetic-v0: partial_credit must be a number ≥ 0, got {partial_credit!r}")
    if isinstance(label_noise, bool) or not isinstance(label_noise, (int, float)) or not 0 <= label_noise <= 1:
        raise ValueError(f"arithmetic-v0: label_noise must be a probability in [0, 1], got {label_noise!r}")

    def gen(rng: random.Random) -> rlenv.Task:
        return generate(rng, digits, operators, difficulty, label_noise)

    def clean(rng: random.Random) -> rlenv.Task:  # few-shot examples are part of the prompt: always right
        return generate(rng, digits, operators, difficulty)

    source = GeneratorSource(gen, size=size, seed=seed, name="arithmetic")
    shots = [GeneratorSource(clean, seed=seed + 10_007)[i] for i in range(few_shot)]
    return ArithmeticEnv(source, rubric(partial_credit), system_prompt=system_prompt, few_shot=shots)


rlenv.register("arithmetic-v0", make_env,
               description="two-number arithmetic, answer as <a>N</a> (digits, operators, difficulty, label_noise)")

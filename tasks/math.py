"""``math-v0``: competition mathematics in the MATH format; answers in ``\\boxed{}``, checked with sympy.

    env = rlenv.make("math-v0")                                       # the bundled sample (offline)
    env = rlenv.make("math-v0", hub="HuggingFaceH4/MATH-500")         # the real set, with network
    env = rlenv.make("math-v0", level=[1, 2])                         # difficulty knob: MATH levels

Rows follow the hub's MATH-500 layout: ``problem``, ``solution``, ``answer``, ``subject``, ``level``,
``unique_id``. When a row has no ``answer`` column (the original MATH layout), the gold answer is
the last ``\\boxed{}`` of the solution. Equivalence is decided by :mod:`verifiers.math` (fractions,
radicals, intervals, matrices, sets…); an unboxed answer still counts when the completion states it
(``The answer is 72``, ``Answer: 72``, ``Therefore 72.``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.parsers import parse_boxed
from tasks._data import load_rows
from verifiers.math import MathVerifier
from verifiers.rubric import Component, Rubric

SYSTEM_PROMPT = "Solve the problem. Put the final answer in \\boxed{}."


def to_task_row(row: dict) -> dict:
    """Hub row → Task fields."""
    if "problem" not in row:
        raise ValueError(f"math-v0 rows need a 'problem' column, got {sorted(row)}")
    gold = row.get("answer") or parse_boxed(row.get("solution") or "")
    if gold is None:
        raise ValueError(f"math-v0: row {row.get('unique_id', '?')} has neither 'answer' nor a boxed solution")
    level = row.get("level")
    if isinstance(level, str) and level.startswith("Level "):  # original MATH: "Level 3"
        level = int(level.split()[1]) if level.split()[1].isdigit() else None
    return {"prompt": row["problem"], "answer": str(gold), "id": row.get("unique_id"),
            "target": row.get("solution"), "level": level, "subject": row.get("subject") or row.get("type")}


def has_box(completion: str, task: rlenv.Task) -> float:
    """Format metric: 1.0 when the completion has a ``\\boxed{}`` answer."""
    return float(parse_boxed(completion) is not None)


def make_env(path: Optional[str] = None, hub: Optional[str] = None, config: Optional[str] = None,
             split: str = "test", level: Union[int, Sequence[int], None] = None,
             system_prompt: str = SYSTEM_PROMPT) -> SingleTurnEnv:
    """Build the env; ``level`` keeps only problems of that MATH level (or levels)."""
    source = load_rows(path=path, hub=hub, config=config, split=split, sample="math500_test_sample.jsonl",
                       transform=to_task_row, name="math")
    if level is not None:
        levels = {level} if isinstance(level, int) else set(level)
        bad = [lv for lv in levels if lv not in range(1, 6)]
        if bad:
            raise ValueError(f"math-v0: level must be in 1..5, got {bad}")
        rows = source.dataset.filter(lambda r: to_task_row(r)["level"] in levels)
        if len(rows) == 0:
            raise ValueError(f"math-v0: no problem has level {sorted(levels)}")
        source = type(source)(rows, transform=to_task_row, name="math")
    rubric = Rubric([Component(MathVerifier(), 1.0, name="correct"), Component(has_box, 0.0, name="format")])
    return SingleTurnEnv(source, rubric, system_prompt=system_prompt)


rlenv.register("math-v0", make_env, description="MATH-format problems, \\boxed{} answers, sympy-checked (sample bundled)")

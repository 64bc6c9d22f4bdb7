"""The outside math-grader test suites in ``tests/data/math_suites/`` and how their cases map to
``verifiers.math.is_equivalent``'s options (shared by ``test_math_suites.py`` and
``benchmarks/math_verify.py``).

Mapping, per suite (README.md in that folder says the same):

* math-verify: ``float_rounding=p`` → ``precision=p`` (its default 6 is our default, so no option is
  passed); ``strict`` → ``strict``. ``match_types`` (LaTeX-only, expr-only, both) and
  ``allow_set_relation_comp`` have no counterpart: our extraction always reads LaTeX and plain
  numbers, and an inequality and an interval are always compared as sets, in both directions.
* hendrycks/math and NeMo-Skills: no options (both graders have none that their tests set);
  NeMo-Skills asserts each pair in both argument orders, so each pair is two checks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "math_suites")
SUITES = {"math-verify": "math_verify.jsonl", "hendrycks-math": "hendrycks_math.jsonl",
          "nemo-skills": "nemo_skills.jsonl"}
MATH_VERIFY_DEFAULT_ROUNDING = 6


@dataclass(frozen=True)
class Check:
    """One labelled comparison: ``is_equivalent(gold, pred, **options) == expected``."""

    suite: str
    case_id: str
    gold: Any
    pred: Any
    expected: bool
    options: tuple  # sorted (name, value) pairs, hashable so checks can be grouped by options


def load(suite: str) -> list[dict]:
    """The rows of one suite file, as written by ``import_suites.py``."""
    with open(os.path.join(DATA, SUITES[suite]), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def our_options(suite: str, row: dict) -> dict:
    """The ``is_equivalent`` keyword arguments that correspond to the options a case was run with."""
    opts = {}
    if suite == "math-verify":
        if row["precision"] != MATH_VERIFY_DEFAULT_ROUNDING:
            opts["precision"] = row["precision"]
        if not row["strict"]:
            opts["strict"] = False
    return opts


def checks(suite: str) -> list[Check]:
    """Every check of a suite (a both-directions pair gives two)."""
    out = []
    for k, row in enumerate(load(suite)):
        case = f"{row['test']}[{row.get('case', k)}]"
        opts = tuple(sorted(our_options(suite, row).items()))
        out.append(Check(suite, case, row["gold"], row["pred"], bool(row["expected"]), opts))
        if row.get("both_directions"):
            out.append(Check(suite, case + "(reversed)", row["pred"], row["gold"], bool(row["expected"]), opts))
    return out


def run(verdict_batch, suite: str) -> tuple[list[Check], list[bool]]:
    """Every check of ``suite`` through ``verdict_batch(pairs, **options) -> list[bool]``, batched by options."""
    cs = checks(suite)
    verdicts: list = [None] * len(cs)
    groups: dict = {}
    for i, c in enumerate(cs):
        groups.setdefault(c.options, []).append(i)
    for opts, idx in groups.items():
        for i, v in zip(idx, verdict_batch([(cs[i].gold, cs[i].pred) for i in idx], **dict(opts))):
            verdicts[i] = bool(v)
    return cs, verdicts

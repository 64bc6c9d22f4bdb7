"""``gsm8k-v0``: grade-school word problems in GSM8K's format; the answer follows ``####``.

    env = rlenv.make("gsm8k-v0")                           # the bundled sample (offline)
    env = rlenv.make("gsm8k-v0", hub="openai/gsm8k")       # the real set (config "main"), with network
    env = rlenv.make("gsm8k-v0", path="my_gsm8k.parquet")  # local files with question/answer columns

Rows are ``{"question": …, "answer": "…reasoning…\\n#### 72"}`` as on the hub. The gold answer is
the number after ``####``; the model's answer is read from ``####``, ``\\boxed{}``, ``<answer>``
tags, a final answer introduced by any word (``Answer: 72``, ``Total: 72``, ``Therefore 72.``) or its
last number, and compared by the math verifier (so ``72.0``, ``$72`` and ``72`` agree). Several
candidates (``72 or 73``) or a later contradicting answer score 0.
"""

from __future__ import annotations

from typing import Optional

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.parsers import parse_gsm8k
from tasks._data import load_rows
from verifiers.math import MathVerifier
from verifiers.rubric import Component, Rubric

SYSTEM_PROMPT = "Solve the problem step by step. End with a line '#### N' where N is the final number."


def to_task_row(row: dict) -> dict:
    """Hub row → Task fields: the gold answer is what follows ``####``; the full solution is the SFT target."""
    if "question" not in row or "answer" not in row:
        raise ValueError(f"gsm8k-v0 rows need 'question' and 'answer' columns, got {sorted(row)}")
    gold = parse_gsm8k(row["answer"])
    if gold is None:
        raise ValueError(f"gsm8k-v0: answer has no '#### N' line: {row['answer'][-80:]!r}")
    solution = row["answer"].replace("<<", "").replace(">>", " ")  # keep the text, drop calculator marks
    return {"prompt": row["question"], "answer": gold, "target": solution}


def has_final_line(completion: str, task: rlenv.Task) -> float:
    """Format metric: 1.0 when the completion ends its reasoning with a ``#### N`` line."""
    return float(parse_gsm8k(completion) is not None)


def make_env(path: Optional[str] = None, hub: Optional[str] = None, config: str = "main",
             split: str = "test", system_prompt: str = SYSTEM_PROMPT, few_shot: int = 0) -> SingleTurnEnv:
    """Build the env from local files, the hub, or the bundled sample (the default)."""
    source = load_rows(path=path, hub=hub, config=config, split=split,
                       sample="gsm8k_main_test_sample.jsonl", transform=to_task_row, name="gsm8k")
    shots = [source[i] for i in range(min(few_shot, len(source)))]
    rubric = Rubric([Component(MathVerifier(), 1.0, name="correct"), Component(has_final_line, 0.0, name="format")])
    return SingleTurnEnv(source, rubric, system_prompt=system_prompt, few_shot=shots)


rlenv.register("gsm8k-v0", make_env, description="GSM8K word problems ('#### N' answers; sample bundled, hub= for the real set)")

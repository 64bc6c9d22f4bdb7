"""``instructions-v0``: IFEval-like instruction following, every constraint checked by code.

    env = rlenv.make("instructions-v0", difficulty=2)   # two constraints per prompt
    obs, info = env.reset(seed=0)
    # "Write a short note about tea. Your entire reply must be in lowercase letters. Use at most 40 words."

Each constraint is a small, deterministic checker (no model judges it). The reward is the share of
constraints followed (``mode="fraction"``) or 1 only when all are (``mode="all"``, IFEval's strict
prompt-level accuracy); ``all_followed`` is always logged.
"""

from __future__ import annotations

import json
import random
import re
from typing import Callable

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.sources import GeneratorSource
from verifiers.base import CORRECT, INCORRECT, PARTIAL, VerifyResult
from verifiers.rubric import Component, Rubric

TOPICS = ["tea", "rivers", "libraries", "bicycles", "winter", "volcanoes", "gardens", "bridges", "owls", "maps"]
KEYWORDS = ["green", "quiet", "ancient", "bright", "simple", "careful", "open", "golden"]
_WORD = re.compile(r"\b[\w'-]+\b")


def _words(text: str) -> list:
    return _WORD.findall(text)


def _bullets(text: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(r"^\s*[-*] \S", line))


def _is_json(text: str) -> bool:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


# name -> (make(rng) -> (instruction text, params), check(text, params) -> bool)
CONSTRAINTS: dict[str, tuple[Callable, Callable]] = {
    "lowercase": (lambda r: ("Your entire reply must be in lowercase letters.", {}),
                  lambda t, p: t == t.lower() and any(c.isalpha() for c in t)),
    "max_words": (lambda r: (lambda n: (f"Use at most {n} words.", {"n": n}))(r.choice([20, 30, 40])),
                  lambda t, p: 0 < len(_words(t)) <= p["n"]),
    "min_words": (lambda r: (lambda n: (f"Use at least {n} words.", {"n": n}))(r.choice([5, 10, 15])),
                  lambda t, p: len(_words(t)) >= p["n"]),
    "keyword": (lambda r: (lambda k: (f"Include the word \"{k}\".", {"k": k}))(r.choice(KEYWORDS)),
                lambda t, p: p["k"] in (w.lower() for w in _words(t))),
    "no_commas": (lambda r: ("Do not use any commas.", {}), lambda t, p: "," not in t),
    "bullets": (lambda r: (lambda n: (f"Answer with exactly {n} bullet points starting with \"- \".", {"n": n}))(
        r.choice([2, 3])), lambda t, p: _bullets(t) == p["n"]),
    "end_phrase": (lambda r: ("End your reply with the exact phrase \"That is all.\"", {}),
                   lambda t, p: t.rstrip().endswith("That is all.")),
    "json": (lambda r: ("Wrap your entire reply in valid JSON.", {}), lambda t, p: _is_json(t)),
}
# pairs that cannot hold together are never drawn into one prompt
CONFLICTS = {frozenset({"json", "bullets"}), frozenset({"json", "end_phrase"}), frozenset({"max_words", "min_words"})}


def generate(rng: random.Random, num_constraints: int = 2) -> rlenv.Task:
    """A topic and ``num_constraints`` compatible constraints."""
    chosen: list = []
    for name in rng.sample(sorted(CONSTRAINTS), len(CONSTRAINTS)):
        if len(chosen) == num_constraints:
            break
        if all(frozenset({name, c}) not in CONFLICTS for c in chosen):
            chosen.append(name)
    topic = rng.choice(TOPICS)
    specs, texts = [], []
    for name in chosen:
        text, params = CONSTRAINTS[name][0](rng)
        specs.append({"name": name, "params": params})
        texts.append(text)
    return rlenv.Task(prompt=f"Write a short note about {topic}. " + " ".join(texts),
                      answer=specs, info={"topic": topic})


def check_all(completion: str, task: rlenv.Task) -> list:
    """Which constraints of ``task`` the completion follows, in order."""
    return [bool(CONSTRAINTS[c["name"]][1](completion, c["params"])) for c in task.answer]


class InstructionsVerifier:
    """Share of constraints followed (``mode="fraction"``) or all-or-nothing (``mode="all"``)."""

    def __init__(self, mode: str = "fraction"):
        if mode not in ("fraction", "all"):
            raise ValueError(f"instructions-v0: mode must be 'fraction' or 'all', got {mode!r}")
        self.mode = mode
        self.name = "instructions"

    def score(self, completion: str, task: rlenv.Task) -> VerifyResult:
        ok = check_all(completion, task)
        frac = sum(ok) / len(ok) if ok else 0.0
        reward = frac if self.mode == "fraction" else float(all(ok))
        verdict = CORRECT if all(ok) else PARTIAL if reward > 0 else INCORRECT
        return VerifyResult(reward, verdict, {"followed": {c["name"]: o for c, o in zip(task.answer, ok)}})


def all_followed(completion: str, task: rlenv.Task) -> float:
    """IFEval's strict prompt-level accuracy for one sample (logged)."""
    return float(all(check_all(completion, task)))


def make_env(difficulty: int = 2, mode: str = "fraction", size: int = 100_000, seed: int = 0) -> SingleTurnEnv:
    """Build the env; ``difficulty`` is the number of constraints per prompt (1–4)."""
    if difficulty not in (1, 2, 3, 4):
        raise ValueError(f"instructions-v0: difficulty must be 1, 2, 3 or 4, got {difficulty!r}")
    source = GeneratorSource(lambda rng: generate(rng, difficulty), size=size, seed=seed, name="instructions")
    rubric = Rubric([Component(InstructionsVerifier(mode), 1.0, name="instructions"),
                     Component(all_followed, 0.0, name="all_followed")])
    return SingleTurnEnv(source, rubric)


rlenv.register("instructions-v0", make_env,
               description="IFEval-like instruction following; constraints checked by code (difficulty = #constraints)")

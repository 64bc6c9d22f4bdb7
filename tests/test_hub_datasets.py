"""Data sets through ``datasets.load_dataset`` with the hub name, config, split and column mapping
given in a run spec. No hub is reachable here, so the "hub" is a local folder laid out exactly like
the hub repository (README ``configs:`` + parquet shards for openai/gsm8k; a root ``test.jsonl``
for HuggingFaceH4/MATH-500): ``load_dataset`` reads it through the same code path as a hub name."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

import rlenv
from rlenv.runspec import parse_spec
from tasks._data import DATA_DIR

GSM8K_README = """---
configs:
- config_name: main
  data_files:
  - split: test
    path: main/test-*
---
"""


@pytest.fixture(scope="module")
def gsm8k_repo(tmp_path_factory) -> str:
    """openai/gsm8k's layout: config ``main`` with ``main/test-00000-of-00001.parquet``."""
    root = tmp_path_factory.mktemp("openai__gsm8k")
    (root / "main").mkdir()
    rows = datasets.load_dataset("json", data_files=str(DATA_DIR / "gsm8k_main_test_sample.jsonl"), split="train")
    rows.to_parquet(str(root / "main" / "test-00000-of-00001.parquet"))
    (root / "README.md").write_text(GSM8K_README)
    return str(root)


@pytest.fixture(scope="module")
def math500_repo(tmp_path_factory) -> str:
    """HuggingFaceH4/MATH-500's layout: one ``test.jsonl`` at the root (default config, split test)."""
    root = tmp_path_factory.mktemp("HuggingFaceH4__MATH-500")
    (root / "test.jsonl").write_text((DATA_DIR / "math500_test_sample.jsonl").read_text())
    return str(root)


def spec_with(env: dict) -> dict:
    return {"model": "preset:micro", "env": env, "stages": [{"grpo": {"max_steps": 1}}], "output_dir": "unused"}


def test_gsm8k_env_from_a_hub_repo_named_in_the_spec(gsm8k_repo):
    spec = parse_spec(spec_with({"id": "gsm8k-v0", "kwargs": {"hub": gsm8k_repo, "config": "main", "split": "test"}}))
    env = rlenv.make(spec.env.id, **spec.env.kwargs)
    bundled = rlenv.make("gsm8k-v0")
    assert len(env.source) == len(bundled.source) > 0
    first, ref = env.source[0], bundled.source[0]
    assert (first.prompt, first.answer) == (ref.prompt, ref.answer)
    env.reset(options={"task_index": 0})
    assert env.step(f"So the answer is\n#### {first.answer}")[1] == 1.0


def test_gsm8k_env_from_a_local_file_in_the_spec(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "Tom has 3 apples and buys 4. How many now?", "answer": "3+4=7\\n#### 7"}\n')
    spec = parse_spec(spec_with({"id": "gsm8k-v0", "kwargs": {"path": str(path), "split": "train"}}))
    env = rlenv.make(spec.env.id, **spec.env.kwargs)
    obs, info = env.reset(seed=0)
    assert "Tom has 3 apples" in obs[-1]["content"] and info["task"].answer == "7"


def test_generic_dataset_env_with_column_mapping_and_verifiers_by_name(math500_repo):
    kwargs = {"hub": math500_repo, "split": "test", "columns": {"prompt": "problem", "answer": "answer", "id": "unique_id"},
              "verifiers": {"math": 1.0, "think_answer_format": 0.0}, "system_prompt": "Box the answer."}
    spec = parse_spec(spec_with({"id": "dataset-v0", "kwargs": kwargs}))
    env = rlenv.make(spec.env.id, **spec.env.kwargs)
    obs, info = env.reset(options={"task_index": 0})
    task = info["task"]
    assert obs[0] == {"role": "system", "content": "Box the answer."}
    assert task.id == "rlenv-sample/prealgebra/0.json" and task.info["subject"] == "Prealgebra"
    _, reward, _, _, info = env.step("Adding: $\\boxed{\\frac{19}{12}}$")
    assert reward == 1.0 and set(info["scores"]) == {"math", "think_answer_format"}
    env.reset(options={"task_index": 0})
    assert env.step("\\boxed{2}")[1] == 0.0
    # the unmapped columns travel on to TRL as dataset columns
    assert {"prompt", "answer", "task_id", "subject", "level", "solution"} <= set(env.as_dataset().column_names)


def test_generic_dataset_env_errors(math500_repo, tmp_path):
    with pytest.raises(ValueError, match="needs path= .* or hub="):
        rlenv.make("dataset-v0")
    with pytest.raises(ValueError, match=r"columns \['question'\] are not in the dataset"):
        rlenv.make("dataset-v0", hub=math500_repo, split="test", columns={"prompt": "question"})
    with pytest.raises(LookupError, match="verifier 'maths' not found. Did you mean 'math'"):
        rlenv.make("dataset-v0", hub=math500_repo, split="test", columns={"prompt": "problem"}, verifiers=["maths"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rlenv.make("dataset-v0", path=str(Path(tmp_path) / "nope.jsonl"))

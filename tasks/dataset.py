"""``dataset-v0``: any question/answer data set — local files or a hub data set — with a column
mapping and verifiers chosen by name. No code needed for a new data set::

    env = rlenv.make("dataset-v0", hub="HuggingFaceH4/MATH-500", split="test",
                     columns={"prompt": "problem", "answer": "answer"}, verifiers=["math"])

or in a run spec::

    env:
      id: dataset-v0
      kwargs:
        hub: HuggingFaceH4/MATH-500        # or path: my_rows.jsonl (jsonl / json / parquet / csv)
        split: test
        columns: {prompt: problem, answer: answer}
        verifiers: {math: 1.0, think_answer_format: 0.0}
        system_prompt: "Put the final answer in \\boxed{}."

Rows load through ``datasets.load_dataset`` (hub name, config, split); ``columns`` maps Task fields
(``prompt``, ``answer``, ``id``) to column names, and every other column reaches the verifiers as
``task.info`` (and TRL reward functions as keyword columns). ``verifiers`` are registered names
(``rlenv verifiers`` lists them): a list (weight 1 each) or a mapping name → weight.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import rlenv
from rlenv.env import SingleTurnEnv
from rlenv.sources import DatasetSource
from tasks._data import load_rows
from verifiers.rubric import Component, Rubric


def _components(verifiers: Union[str, list, dict]) -> list:
    if isinstance(verifiers, str):
        verifiers = [verifiers]
    pairs = list(verifiers.items()) if isinstance(verifiers, dict) else [(v, 1.0) for v in verifiers]
    if not pairs:
        raise ValueError("dataset-v0: verifiers is empty; name at least one (e.g. ['math']), see `rlenv verifiers`")
    bad = [v for v, _ in pairs if not isinstance(v, str)]
    if bad:
        raise ValueError(f"dataset-v0: verifiers must be registered names (see `rlenv verifiers`), got {bad!r}")
    return [Component(name, float(weight)) for name, weight in pairs]


def make_env(path: Optional[str] = None, hub: Optional[str] = None, config: Optional[str] = None,
             split: str = "train", columns: Optional[dict] = None,
             verifiers: Union[str, list, dict] = ("math",), system_prompt: Optional[str] = None) -> SingleTurnEnv:
    """Build the env from ``path`` (local files) or ``hub`` (a hub data set name, or a local folder
    laid out as a hub repository); see the module docstring."""
    if path is None and hub is None:
        raise ValueError("dataset-v0 needs path= (local jsonl/json/parquet/csv files) or hub= (a hub data set "
                         "name such as 'openai/gsm8k')")
    rubric = Rubric(_components(list(verifiers) if isinstance(verifiers, tuple) else verifiers))
    source: DatasetSource = load_rows(path=path, hub=hub, config=config, split=split, sample="",
                                      columns=dict(columns or {}))
    return SingleTurnEnv(source, rubric, system_prompt=system_prompt)


rlenv.register("dataset-v0", make_env,
               description="any local or hub data set: column mapping + verifiers by name (path/hub, split, columns)")

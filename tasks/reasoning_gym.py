"""``rg/<name>-v0``: every procedural data set of the optional `reasoning-gym` package as an env.

    env = rlenv.make("rg/leg_counting-v0")                  # the data set's default config
    env = rlenv.make("rg/leg_counting-v0", difficulty=2)    # curriculum level 2 (all attributes)
    env = rlenv.make("rg/word_sorting-v0", levels={"num_words": 3}, config={"size": 50})

The prompt is reasoning-gym's question under its ``default`` system prompt; the model answers
inside ``<answer>…</answer>`` tags, read with reasoning-gym's own ``extract_answer`` and scored by
the data set's own ``score_answer``. The reward is 1 when that scorer says fully right and 0
otherwise; ``partial_credit=True`` passes its graded score on instead (format credit, hedges that
contain the answer and near misses then earn a fraction — `rlenv audit` flags that). Every task
carries ``info["target"]``, the ideal completion ``<answer>{gold}</answer>``, where the data set
has a gold answer.

Where a scorer is known to reward wrong answers or to run the answer as code, a check of ours
(:mod:`tasks._rg_guards`) stands in front of it; a scorer that raises on the model's answer scores
0 (the answer is wrong), and only a failure on the task itself is masked. A data set whose scorer
no check can repair refuses to build unless ``allow_unsound_scorer=True``.

``difficulty`` is the data set's curriculum level (``set_global_level``): ``None`` keeps the
data set's default config, 0 is the easiest level. It is the knob a run spec's ``env.curriculum``
raises. ``config`` fields may be plain YAML data: nested dataclasses (``composite``'s ``datasets``),
enums, tuples and dates are built from it::

    env:
      id: rg/composite-v0
      kwargs:
        config:
          datasets:
            - {name: leg_counting, weight: 2, config: {min_animals: 2}}
            - {name: basic_arithmetic, weight: 1, config: {}}

Ids are registered from a scan of the installed package's sources (the names its modules pass to
``register_dataset``), so importing ``tasks`` neither imports reasoning-gym (seconds) nor needs it;
the package is imported the first time one of these envs is made.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import json
import math
import re
import sys
import threading
import typing
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import rlenv
from rlenv.core import Task
from rlenv.env import SingleTurnEnv
from rlenv.registry import registry as _registry
from rlenv.sources import TaskSource
from verifiers.base import CORRECT, INCORRECT, PARTIAL, VerifyResult, completion_text, passes
from verifiers.rubric import Component, Rubric

from ._rg_config import coerce
from ._rg_guards import UNSOUND, WRONG_ANSWERS, guard_for, patch_eval_scorers

PACKAGE = "reasoning_gym"
INSTALL_HINT = "pip install reasoning-gym"
_CALL = re.compile(r"register_dataset\(\s*(?:[\"'](\w+)[\"']|([A-Z_]+))\s*,")
_CONST = re.compile(r"^([A-Z_]+)\s*=\s*[\"'](\w+)[\"']", re.M)


def package_dir() -> Optional[Path]:
    """Folder of the installed reasoning-gym package, found without importing it; ``None`` when it
    is not installed (or blocked with ``sys.modules['reasoning_gym'] = None``)."""
    if PACKAGE in sys.modules:
        mod = sys.modules[PACKAGE]
        return Path(mod.__file__).parent if mod is not None and getattr(mod, "__file__", None) else None
    try:
        found = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    return Path(found.origin).parent if found is not None and found.origin else None


def dataset_names(root: Optional[Path] = None) -> list[str]:
    """Names of the package's data sets, read from the ``register_dataset(...)`` calls in its
    sources (a name literal or a module constant such as ``DATASET_NAME = "leg_counting"``)."""
    root = root or package_dir()
    if root is None:
        return []
    names = set()
    for path in root.rglob("*.py"):
        src = path.read_text(encoding="utf-8", errors="replace")
        if "register_dataset(" not in src:
            continue
        consts = dict(_CONST.findall(src))
        for literal, const in _CALL.findall(src):
            name = literal or consts.get(const)
            if name:
                names.add(name)
    return sorted(names)


def _import_rg(name: str):
    try:
        import reasoning_gym  # noqa: F401  (runs the package's register_dataset calls)
        from reasoning_gym import factory
    except ImportError as e:
        raise ImportError(f"Env `rg/{name}-v0` needs the optional package reasoning-gym, which is not "
                          f"installed (or failed to import: {e}); install it with `{INSTALL_HINT}`") from e
    if name not in factory.DATASETS:
        close = difflib.get_close_matches(name, list(factory.DATASETS), n=3)
        hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
        raise ValueError(f"reasoning-gym has no data set {name!r}.{hint} Run `rlenv envs` to list the rg/ ids.")
    patch_eval_scorers()  # before any scorer sees a model's answer
    return factory


def build_config(name: str, difficulty: Optional[int] = None, levels: Optional[dict] = None,
                 config: Optional[dict] = None, seed: int = 0, size: int = 10_000) -> Any:
    """The data set's config dataclass: curriculum levels applied first (``difficulty`` for every
    attribute, then ``levels`` per attribute), then the explicit ``config`` fields, which win."""
    factory = _import_rg(name)
    _, config_cls = factory.DATASETS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    config = dict(config or {})
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"rg/{name}-v0: config has unknown fields {unknown}; {config_cls.__name__} has {sorted(fields)}")
    hints = typing.get_type_hints(config_cls)
    config = {k: coerce(v, hints.get(k, Any), f"rg/{name}-v0: config.{k}") for k, v in config.items()}
    base = {k: v for k, v in (("seed", seed), ("size", size)) if k in fields}
    if difficulty is None and not levels:
        cfg = config_cls(**base)
    else:
        if not factory.has_curriculum(name):
            raise ValueError(f"rg/{name}-v0 has no curriculum in reasoning-gym, so difficulty/levels cannot "
                             f"be set; use config={{...}} with {config_cls.__name__}'s fields instead")
        cur = factory.create_curriculum(name)
        top = max(len(a.levels) for a in cur.attributes.values()) - 1
        if difficulty is not None:
            if isinstance(difficulty, bool) or not isinstance(difficulty, int) or not 0 <= difficulty <= top:
                raise ValueError(f"rg/{name}-v0: difficulty must be a curriculum level in 0..{top}, got {difficulty!r}")
            cur.set_global_level(difficulty)
        for attr, level in (levels or {}).items():
            if attr not in cur.attributes:
                raise ValueError(f"rg/{name}-v0: levels names unknown curriculum attribute {attr!r}; "
                                 f"it has {sorted(cur.attributes)}")
            n = len(cur.attributes[attr].levels)
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < n:
                raise ValueError(f"rg/{name}-v0: levels[{attr!r}] must be in 0..{n - 1}, got {level!r}")
            cur.set_attr_level(attr, level)
        cfg = cur.generate_configuration(base)
    cfg = dataclasses.replace(cfg, **config)
    if name == "composite" and not getattr(cfg, "datasets", None):
        raise ValueError("rg/composite-v0 needs config={'datasets': [{'name': 'leg_counting', 'weight': 1, "
                         "'config': {}}, ...]}: the reasoning-gym data sets to mix, with weights")
    if hasattr(cfg, "validate"):
        try:
            cfg.validate()
        except (AssertionError, ValueError) as e:
            raise ValueError(f"rg/{name}-v0: reasoning-gym rejected the config {cfg}: {e}") from None
    return cfg


_TUPLE = "__tuple__"


def _tag_tuples(value: Any) -> Any:
    if isinstance(value, tuple):
        return {_TUPLE: [_tag_tuples(v) for v in value]}
    if isinstance(value, list):
        return [_tag_tuples(v) for v in value]
    if isinstance(value, dict):
        return {k: _tag_tuples(v) for k, v in value.items()}
    return value


def _untag_tuples(obj: dict) -> Any:
    return tuple(obj[_TUPLE]) if set(obj) == {_TUPLE} else obj


def metadata_to_json(metadata: Any) -> Optional[str]:
    """The entry's metadata as JSON text (one Arrow-friendly column whatever its shape; tuples kept,
    as scorers compare them, e.g. ARC boards), or ``None`` when JSON cannot carry it exactly (int
    dict keys, sets, objects): the verifier then regenerates the entry from its index."""
    try:
        text = json.dumps(_tag_tuples(metadata))
    except (TypeError, ValueError):
        return None
    return text if metadata_from_json(text) == metadata else None


def metadata_from_json(text: str) -> Any:
    """Inverse of :func:`metadata_to_json`."""
    return json.loads(text, object_hook=_untag_tuples)


class ReasoningGymSource(TaskSource):
    """Tasks from a reasoning-gym ``ProceduralDataset`` (entry ``i`` is always the same task)."""

    #: entries kept after generation: some data sets take a second to generate one (they solve it),
    #: and every sample of a group (and every audit probe) asks for the same entry again
    cache_size = 256

    def __init__(self, dataset: Any, name: str):
        self.dataset, self.name = dataset, f"rg/{name}"
        self.dataset_name = name
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # verifiers run in threads and may regenerate entries too

    def __len__(self) -> int:
        return len(self.dataset)

    def __getstate__(self) -> dict:  # copies and pickles (process-isolated verifiers) start cold
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache=OrderedDict(), _lock=threading.Lock())

    def entry(self, i: int) -> dict:
        """Entry ``i`` of the data set (a copy; generated once while it stays in the cache)."""
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
            else:
                self._cache[i] = self.dataset[i]
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            entry = self._cache[i]
        return copy.deepcopy(entry)  # a caller (or a scorer) may change what it gets

    def __getitem__(self, index: int) -> Task:
        i = self._check_index(index)
        entry = self.entry(i)
        info = {"rg_dataset": self.dataset_name, "rg_index": i, "rg_metadata": metadata_to_json(entry.get("metadata"))}
        if entry["answer"] is not None:
            info["target"] = render_answer(entry["answer"])
        return Task(prompt=entry["question"], answer=entry["answer"], info=info, id=f"{self.name}-{i}")


def render_answer(answer: Any) -> str:
    """The completion that states ``answer`` in the format these envs read."""
    return f"<answer>{answer}</answer>"


class ScoreAnswer:
    """A reasoning-gym data set's own ``score_answer`` as a verifier: the answer is the last
    ``<answer>…</answer>`` of the completion (reasoning-gym's ``extract_answer``).

    Our guard for the data set (if any) may reject the answer first; the scorer raising on the
    answer scores 0. Reward 1 when the scorer's score is 1, else 0 — or the score itself with
    ``partial_credit``. ``details["rg_score"]`` is the scorer's own number.
    """

    def __init__(self, dataset: Any, name: str = "", partial_credit: bool = False,
                 entry_at: Optional[Any] = None):
        self.dataset = dataset
        self.entry_at = entry_at or dataset.__getitem__
        self.dataset_name = name
        self.partial_credit = partial_credit
        self.name = "score_answer"

    def entry(self, task: Any) -> dict:
        """The reasoning-gym entry the task came from: rebuilt from its answer and metadata, or
        regenerated from its index when the metadata could not travel as JSON."""
        info = getattr(task, "info", None) or {}
        meta = info.get("rg_metadata")
        if meta is None:
            return self.entry_at(int(info["rg_index"]))
        return {"question": task.prompt, "answer": task.answer, "metadata": metadata_from_json(meta)}

    def _scorer_error(self, answer: Any, entry: dict, error: Exception) -> VerifyResult:
        """The scorer raised on ``answer``: a wrong answer (0) when it scores the entry's own gold
        answer, our fault (raised, so the sample is masked) when it fails on that too."""
        gold = entry.get("answer")
        if gold is not None:
            try:
                if gold == answer:
                    raise error
                self.dataset.score_answer(answer=gold, entry=entry)
            except Exception:
                raise RuntimeError(f"reasoning-gym's {self.dataset_name} scorer fails on the task's own gold "
                                   f"answer ({type(error).__name__}: {error})") from error
        why = f"{type(error).__name__}: {error}"[:200]
        return VerifyResult(0.0, INCORRECT, {"parsed": answer, "rejected": f"the scorer raised {why}"})

    def score(self, completion: Any, task: Any) -> VerifyResult:
        """``score_answer(extract_answer(completion), entry)`` behind our guard, as a :class:`VerifyResult`."""
        from reasoning_gym.utils import extract_answer

        answer = extract_answer(completion_text(completion))
        entry = self.entry(task)  # a failure here is ours: it raises and the sample is masked
        guard = guard_for(self.dataset_name, entry) if answer is not None else None
        problem = guard(answer, entry) if guard is not None else None
        if problem:
            return VerifyResult(0.0, INCORRECT, {"parsed": answer, "rejected": problem})
        try:
            value = float(self.dataset.score_answer(answer=answer, entry=entry))
        except Exception as e:  # noqa: BLE001 - any scorer bug on the answer is a wrong answer
            return self._scorer_error(answer, entry, e)
        if not math.isfinite(value):
            return VerifyResult(0.0, INCORRECT, {"parsed": answer, "rejected": f"the scorer returned {value}"})
        reward = min(max(value, 0.0), 1.0) if self.partial_credit else float(passes(value))
        verdict = CORRECT if passes(reward) else INCORRECT if reward <= 0.0 else PARTIAL
        return VerifyResult(reward, verdict, {"parsed": answer, "rg_score": value})


class ReasoningGymEnv(SingleTurnEnv):
    """A :class:`SingleTurnEnv` over one reasoning-gym data set; :meth:`render_answer` tells tools
    such as ``rlenv audit`` how an answer is written in a completion."""

    def render_answer(self, task: Task, answer: Any) -> str:
        """The completion that states ``answer`` for ``task``: ``<answer>{answer}</answer>``."""
        return render_answer(answer)

    def wrong_answers(self, task: Task) -> Optional[list]:
        """Answers known to be wrong for ``task`` where the data set accepts several right ones
        (``None`` elsewhere: a changed gold answer is wrong there)."""
        if task.answer is None:
            return None
        meta = self.rubric.components[0].verifier.entry(task).get("metadata") or {}
        make = WRONG_ANSWERS.get(meta.get("source_dataset", task.info.get("rg_dataset", "")))
        if make is not None:
            return make(str(task.answer))
        if "valid_answers" in meta:  # n_queens lists every right board (a reversed one is one of them)
            from rlenv.audit_probes import wrong_variants

            return [w for w in wrong_variants(str(task.answer)) if w not in meta["valid_answers"]]
        return None


def has_answer_tag(completion: Any, task: Any) -> float:
    """Format metric: 1.0 when the completion has an ``<answer>…</answer>`` span."""
    from reasoning_gym.utils import extract_answer

    return float(extract_answer(completion_text(completion)) is not None)


def _refusal(name: str, cfg: Any) -> Optional[str]:
    """Why the data set's scorer cannot be trusted (a composite: any of its parts), or ``None``."""
    names = [d.name for d in cfg.datasets] if name == "composite" else [name]
    bad = [f"{n}: {UNSOUND[n]}" for n in names if n in UNSOUND]
    return "; ".join(bad) or None


def make_env(name: str, difficulty: Optional[int] = None, levels: Optional[dict] = None,
             config: Optional[dict] = None, seed: int = 0, size: int = 10_000,
             system_prompt: Optional[str] = "default", partial_credit: bool = False,
             allow_unsound_scorer: bool = False) -> ReasoningGymEnv:
    """Build the env for reasoning-gym data set ``name`` (see the module docstring).

    ``system_prompt`` is a key of reasoning-gym's ``SYSTEM_PROMPTS`` (``default``, ``DeepSeekZero``,
    ``simple``, ``direct``, …), your own text, or ``None`` for none. ``partial_credit`` passes the
    scorer's graded score on instead of 1/0; ``allow_unsound_scorer`` builds a data set whose
    scorer is known to reward wrong answers (see :data:`tasks._rg_guards.UNSOUND`).
    """
    build = build_config(name, difficulty, levels, config, seed, size)
    problem = _refusal(name, build)
    if problem and not allow_unsound_scorer:
        raise ValueError(f"rg/{name}-v0 refuses to build: {problem}. Its rewards would train the wrong "
                         f"behaviour; pass allow_unsound_scorer=True to use it anyway")
    from reasoning_gym.utils import SYSTEM_PROMPTS

    dataset_cls, _ = sys.modules["reasoning_gym.factory"].DATASETS[name]
    dataset = dataset_cls(config=build)
    prompt = SYSTEM_PROMPTS.get(system_prompt, system_prompt) if isinstance(system_prompt, str) else system_prompt
    source = ReasoningGymSource(dataset, name)
    rubric = Rubric([Component(ScoreAnswer(dataset, name, bool(partial_credit), source.entry), 1.0, name="correct"),
                     Component(has_answer_tag, 0.0, name="format")])
    return ReasoningGymEnv(source, rubric, system_prompt=prompt)


def register_all() -> list[str]:
    """Register ``rg/<name>-v0`` for every data set of the installed package (none when absent)."""
    ids = []
    for name in dataset_names():
        env_id = f"rg/{name}-v0"
        if env_id not in _registry:  # re-importing the module must not fail
            rlenv.register(env_id, f"{__name__}:make_env", name=name,
                           description=f"reasoning-gym {name} (<answer> tags, its score_answer; difficulty = curriculum level)")
            ids.append(env_id)
    return ids


register_all()

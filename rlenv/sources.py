"""Task sources: where an env draws its :class:`~rlenv.core.Task` from.

Three kinds, one small interface (``len(source)`` — ``None`` for an endless generator — and
``source[i] -> Task``), so an env can draw a seeded random index or pin one:

- :class:`ListSource` — a plain list of tasks (or dicts with Task fields);
- :class:`DatasetSource` — a :class:`datasets.Dataset` with a column mapping, built from local
  jsonl / parquet / csv files (:meth:`DatasetSource.from_files`) or a hub name
  (:meth:`DatasetSource.from_hub`, where the network allows);
- :class:`GeneratorSource` — a function ``(rng) -> Task`` for procedural tasks; task ``i`` is
  always generated from the same seed, so ``source[i]`` is reproducible.

:func:`as_source` turns any of the raw forms (list, Dataset, function) into a source.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Optional, Sequence

from .core import Task

__all__ = ["TaskSource", "ListSource", "DatasetSource", "GeneratorSource", "as_source", "to_task"]

_TASK_FIELDS = ("prompt", "answer", "info", "id")


def to_task(obj: Any, index: int = 0) -> Task:
    """A :class:`Task` from a Task, a dict with Task fields, or a bare prompt string."""
    if isinstance(obj, Task):
        return obj
    if isinstance(obj, str):
        return Task(prompt=obj, id=str(index))
    if isinstance(obj, Mapping):
        unknown = set(obj) - set(_TASK_FIELDS)
        if "prompt" not in obj:
            raise ValueError(f"task #{index} has no 'prompt' field (keys: {sorted(obj)}); "
                             f"map a column to it with columns={{'prompt': '<your column>'}}")
        if unknown:
            raise ValueError(f"task #{index} has unknown fields {sorted(unknown)}; a task has "
                             f"{list(_TASK_FIELDS)} — put extra data under 'info'")
        t = Task(**dict(obj))
        if t.id is None:
            t.id = str(index)
        return t
    raise TypeError(f"task #{index} is a {type(obj).__name__}; expected a Task, a dict or a string")


class TaskSource:
    """Base of task sources: ``len(source)`` (``None`` when endless) and ``source[i]``."""

    name: str = "tasks"

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def size(self) -> Optional[int]:
        """Number of tasks, or ``None`` for an endless procedural source."""
        return len(self)

    def __getitem__(self, index: int) -> Task:  # pragma: no cover - overridden
        raise NotImplementedError

    def __iter__(self):
        n = self.size()
        if n is None:
            raise TypeError(f"{type(self).__name__} is endless; index it or give it a size")
        return (self[i] for i in range(n))

    def _check_index(self, index: int) -> int:
        n = self.size()
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"task_index must be an int, got {type(index).__name__}")
        if n is not None and not -n <= index < n:
            raise IndexError(f"task_index {index} out of range for a source of {n} tasks")
        return index % n if n else index


class ListSource(TaskSource):
    """A fixed list of tasks (Task objects, dicts with Task fields, or prompt strings)."""

    def __init__(self, tasks: Sequence[Any], name: str = "list"):
        self.tasks = [to_task(t, i) for i, t in enumerate(tasks)]
        if not self.tasks:
            raise ValueError("ListSource needs at least one task")
        self.name = name

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[self._check_index(index)]


class DatasetSource(TaskSource):
    """Tasks from a :class:`datasets.Dataset`.

    ``columns`` maps Task fields to dataset columns, e.g. ``{"prompt": "question", "answer":
    "answer"}`` (unmapped fields default to a column of the same name when it exists). Every other
    column goes into ``task.info``. ``transform(row) -> dict`` may rewrite a row first (GSM8K's
    ``"… #### 72"`` answers, for instance).
    """

    def __init__(self, dataset: Any, columns: Optional[Mapping[str, str]] = None,
                 transform: Optional[Callable[[dict], dict]] = None, name: Optional[str] = None):
        self.dataset = dataset
        self.columns = dict(columns or {})
        bad = set(self.columns) - set(_TASK_FIELDS)
        if bad:
            raise ValueError(f"columns maps unknown Task fields {sorted(bad)}; Task fields are {list(_TASK_FIELDS)}")
        names = list(getattr(dataset, "column_names", []) or [])
        for field in _TASK_FIELDS:
            if field not in self.columns and field in names:
                self.columns[field] = field
        if transform is None:
            missing = [c for c in self.columns.values() if c not in names]
            if missing:
                raise ValueError(f"columns {missing} are not in the dataset; it has {names}")
            if "prompt" not in self.columns:
                raise ValueError(f"no column for the task prompt; pass columns={{'prompt': ...}} "
                                 f"(dataset columns: {names})")
        self.transform = transform
        self.name = name or getattr(getattr(dataset, "info", None), "dataset_name", None) or "dataset"
        if transform is not None and len(dataset) > 0:
            self[0]  # a row the transform rejects (missing columns) fails here, not mid-run

    @classmethod
    def from_files(cls, path: Any, split: str = "train", **kwargs) -> "DatasetSource":
        """Load local ``.jsonl``/``.json``/``.parquet``/``.csv`` files with ``datasets.load_dataset``."""
        import datasets

        paths = [path] if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__") else list(path)
        if not paths:
            raise ValueError("DatasetSource.from_files needs at least one data file")
        first = str(paths[0])
        fmt = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(first.rsplit(".", 1)[-1].lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format of {first!r}: use a .jsonl, .json, .parquet or .csv file")
        for p in paths:
            _check_data_file(str(p), text=fmt != "parquet")
        try:
            ds = datasets.load_dataset(fmt, data_files={split: [str(p) for p in paths]}, split=split)
        except StopIteration:  # datasets' json reader on a file of blank lines
            raise ValueError(f"data file {first!r} holds no rows; an env needs at least one task") from None
        except Exception as e:  # noqa: BLE001 - a reader's deep traceback becomes one line naming the file
            raise ValueError(f"data file {first!r} cannot be read as {fmt}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from None
        if len(ds) == 0:
            raise ValueError(f"data file {first!r} holds no rows; an env needs at least one task")
        return cls(ds, **kwargs)

    @classmethod
    def from_hub(cls, name: str, /, split: str = "train", config: Optional[str] = None, **kwargs) -> "DatasetSource":
        """Load ``name``/``config``/``split`` from the Hugging Face hub (needs network access or a
        warm ``HF_DATASETS_CACHE``). ``name=`` in ``kwargs`` names the source (``name`` itself is
        positional-only so the two cannot clash)."""
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
        return cls(ds, name=kwargs.pop("name", name), **kwargs)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Task:
        i = self._check_index(index)
        row = dict(self.dataset[i])
        if self.transform is not None:
            row = dict(self.transform(row))
        used = set(self.columns.values())
        fields = {f: row.get(c) for f, c in self.columns.items() if c in row}
        info = dict(fields.pop("info", None) or {})
        info.update({k: v for k, v in row.items() if k not in used and k not in _TASK_FIELDS})
        if self.transform is not None:  # a transform may emit Task fields directly
            for f in _TASK_FIELDS:
                if f in row and f not in fields and f != "info":
                    fields[f] = row[f]
        if "prompt" not in fields:
            raise ValueError(f"row {i} produced no prompt (row keys: {sorted(row)})")
        tid = fields.get("id")
        return Task(prompt=fields["prompt"], answer=fields.get("answer"), info=info,
                    id=str(tid) if tid is not None else f"{self.name}-{i}")


def _check_data_file(path: str, text: bool) -> None:
    """One clear error for a data file that is missing, empty or (text formats) not UTF-8 — before
    a reader fails somewhere deep inside with a traceback."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist (or is not a file)")
    if os.path.getsize(path) == 0:
        raise ValueError(f"data file {path!r} is empty; an env needs at least one task")
    if not text:
        return
    import codecs

    decoder, offset, blank = codecs.getincrementaldecoder("utf-8")(), 0, True
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            blank = blank and not chunk.strip()
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise ValueError(f"data file {path!r} is not UTF-8 text (byte 0x{chunk[e.start]:02x} at offset "
                                 f"{offset + e.start}); re-save it as UTF-8") from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"data file {path!r} is not UTF-8 text (it ends inside a multi-byte character); "
                             f"re-save it as UTF-8") from None
    if blank:
        raise ValueError(f"data file {path!r} holds no rows (only blank lines); an env needs at least one task")


class GeneratorSource(TaskSource):
    """Procedural tasks: ``generate(rng: random.Random) -> Task`` (or a dict with Task fields).

    Task ``i`` is generated from ``random.Random(f"{seed}-{i}")``, so the same index always gives
    the same task whatever was generated before. ``size=None`` makes the source endless (indices
    are drawn from ``[0, 2**31)``).
    """

    def __init__(self, generate: Callable[[random.Random], Any], size: Optional[int] = None,
                 seed: int = 0, name: Optional[str] = None):
        if not callable(generate):
            raise TypeError("GeneratorSource needs a function (rng) -> Task")
        if size is not None and size < 1:
            raise ValueError(f"GeneratorSource size must be ≥ 1 or None, got {size}")
        self.generate, self._size, self.seed = generate, size, seed
        self.name = name or getattr(generate, "__name__", "generated")

    def __len__(self) -> int:
        if self._size is None:
            raise TypeError("an endless GeneratorSource has no len(); use .size()")
        return self._size

    def size(self) -> Optional[int]:
        return self._size

    def __getitem__(self, index: int) -> Task:
        i = self._check_index(index)
        task = to_task(self.generate(random.Random(f"{self.seed}-{i}")), i)
        if task.id is None or task.id == str(i):
            task.id = f"{self.name}-{i}"
        return task


def as_source(obj: Any) -> TaskSource:
    """Turn a TaskSource, a list of tasks, a ``datasets.Dataset`` or a generator function into a
    :class:`TaskSource`."""
    if isinstance(obj, TaskSource):
        return obj
    if isinstance(obj, (list, tuple)):
        return ListSource(obj)
    if hasattr(obj, "column_names") and hasattr(obj, "__getitem__"):
        return DatasetSource(obj)
    if callable(obj):
        return GeneratorSource(obj)
    raise TypeError(f"cannot use a {type(obj).__name__} as a task source: pass a list of tasks, a "
                    f"datasets.Dataset, a function (rng) -> Task, or an rlenv.sources.TaskSource")

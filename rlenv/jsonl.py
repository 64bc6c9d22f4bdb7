"""JSON lines, written so a reader never sees half a file or a torn line.

:func:`write_jsonl_atomic` replaces a whole file (temp file, fsync, rename); :func:`append_jsonl`
adds records in one ``write`` call, flushed and fsynced. Evaluation samples and the trainers'
``metrics.jsonl`` both go through here.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence, Union

__all__ = ["jsonable", "append_jsonl", "write_jsonl_atomic"]


def jsonable(v: Any) -> Any:
    """A value JSON can hold: tensors and numpy scalars become numbers; NaN becomes null and ±inf
    the largest finite float, so every line stays valid JSON."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def append_jsonl(path: Union[str, os.PathLike], records: list) -> None:
    """Append records as jsonl in one write, flushed and fsynced (never a torn line). A value JSON
    cannot hold (a task's answer object, say) is written as its ``str``."""
    if not records:
        return
    text = "".join(json.dumps({k: jsonable(v) for k, v in r.items()}, default=str) + "\n" for r in records)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl_atomic(path: Union[str, os.PathLike], rows: Sequence[dict]) -> Path:
    """Write ``rows`` as JSON lines to ``path`` via a temp file + fsync + rename: the file is either
    the old one or complete, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_jsonl(path: Union[str, os.PathLike]) -> list[dict]:
    """Every complete record of a jsonl file written by :func:`append_jsonl` (a torn last line,
    which a crash can leave only in files written otherwise, is skipped); ``[]`` when it is absent."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

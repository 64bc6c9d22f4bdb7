"""Metrics logging: ``metrics.jsonl`` always, TensorBoard when installed, a curve PNG on demand.

Each jsonl line is written with one ``write`` call, flushed and fsynced, so a crash never leaves a
torn line. The PNG (drawn by :mod:`trainers.plotting`) is written to a temporary file and renamed
into place, so a reader never sees a half-written image. Only the main process logs (the loop
passes ``enabled=False`` elsewhere).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def append_jsonl(path: str | os.PathLike, records: list) -> None:
    """Append records as jsonl in one write, flushed and fsynced (never a torn line)."""
    if not records:
        return
    text = "".join(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n" for r in records)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All complete records of a ``metrics.jsonl`` file (a torn last line, if any, is skipped)."""
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


class MetricsLogger:
    """Writes one record per ``log`` call to ``<output_dir>/metrics.jsonl`` (and TensorBoard).

    Args:
        output_dir: the run's folder.
        report_to: ``"tensorboard"`` also writes event files under ``<output_dir>/tensorboard``
            (skipped quietly when tensorboard is not installed); ``"none"`` writes only the jsonl.
        enabled: False on non-main processes.
        resume_step: when resuming, records with ``step`` beyond this are dropped (they came from
            the interrupted run after its last checkpoint and will be recomputed).
    """

    def __init__(self, output_dir: str | os.PathLike, report_to: str = "tensorboard", enabled: bool = True,
                 resume_step: Optional[int] = None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.history: list[dict] = []
        self._tb = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.history = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self._rewrite()
        elif self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"),
                                         purge_step=None if resume_step is None else resume_step + 1)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            for r in self.history:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def log(self, step: int, metrics: dict) -> dict:
        """Append ``{"step": step, **metrics}``; returns the record written."""
        record = {"step": int(step)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        self.history.append(record)
        append_jsonl(self.path, [record])
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        return record

    def plot(self, path: Optional[str | os.PathLike] = None, keys: Optional[list] = None,
             title: str = "") -> Optional[Path]:
        """Draw the logged curves to a PNG (``curves.png`` by default), atomically: the panels of
        :func:`trainers.plotting.plot_stage`, or one panel per name in ``keys``.

        Returns the PNG path, or None when there is nothing to draw or matplotlib is missing.
        """
        if not self.enabled or not self.history:
            return None
        from .plotting import plot_stage

        return plot_stage(self.history, path or self.output_dir / "curves.png", title=title, keys=keys)

    def close(self) -> None:
        """Flush and close TensorBoard's writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

"""Metrics logging: ``metrics.jsonl`` always, the trackers of ``report_to`` (TensorBoard, W&B,
trackio, MLflow, … through accelerate's tracking API), a curve PNG on demand.

Each jsonl line is written with one ``write`` call, flushed and fsynced, so a crash never leaves a
torn line. The PNG (drawn by :mod:`trainers.plotting`) is written to a temporary file and renamed
into place, so a reader never sees a half-written image. Only the main process logs (the loop passes ``enabled=False`` elsewhere).

Trackers: :func:`resolve_trackers` turns ``report_to`` into the ``log_with`` list of the trainer's
``Accelerator`` (``all``: every installed one; a tracker asked for by name but not installed is an
error that says what to install); :class:`MetricsLogger` starts them with
``accelerator.init_trackers`` and sends every record through ``accelerator.log``. Files of the
local ones go to the run's folder: ``<output_dir>/tensorboard/<project>/``, ``<output_dir>/wandb/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from rlenv.jsonl import append_jsonl, jsonable as _jsonable, read_jsonl as read_metrics  # read_metrics: public name



def resolve_trackers(report_to: list[str]) -> list[str]:
    """accelerate's ``log_with`` names for ``report_to`` (``all``: every tracker installed). A tracker
    named explicitly but not installed raises an ImportError saying what to install."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    available = [str(t) for t in get_available_trackers()]
    if "all" in report_to:
        return available
    builtin = {str(t) for t in LoggerType} - {"all"}  # custom registered trackers are always "installed"
    missing = [n for n in report_to if n in builtin and n not in available]
    if missing:
        raise ImportError(f"report_to asks for {', '.join(missing)}, which is not installed: pip install "
                          f"{' '.join(missing)} (or drop it from report_to; 'none' logs metrics.jsonl only)")
    unknown = [n for n in report_to if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ValueError(f"report_to: unknown tracker(s) {unknown}; accelerate knows {sorted(LOGGER_TYPE_TO_CLASS)}")
    return list(dict.fromkeys(report_to))


def tracker_dir(output_dir: str | os.PathLike) -> Path:
    """Where trackers that need a folder (TensorBoard, aim) write: ``<output_dir>/tensorboard``."""
    return Path(output_dir) / "tensorboard"


def _scalars(record: dict, prefix: str = "") -> dict:
    """The int/float/str/bool leaves of a (nested) config dump, for the trackers' hyperparameters."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = ",".join(map(str, v))
    return out


class MetricsLogger:
    """Writes one record per ``log`` call to ``<output_dir>/metrics.jsonl`` and to the trackers.

    Args:
        output_dir: the run's folder.
        accelerator: the trainer's ``Accelerator``, built with ``log_with=resolve_trackers(report_to)``
            and ``project_config.logging_dir=tracker_dir(output_dir)``; None or no trackers: the
            jsonl only.
        enabled: False on non-main processes.
        resume_step: when resuming, records with ``step`` beyond this are dropped (they came from
            the interrupted run after its last checkpoint and will be recomputed; TensorBoard purges
            its own).
        project: the trackers' project name; the run is named after the output folder.
        config: the run's settings (a dict), stored as the trackers' hyperparameters.
    """

    def __init__(self, output_dir: str | os.PathLike, accelerator: Any = None, enabled: bool = True,
                 resume_step: Optional[int] = None, project: str = "rlenv", config: Optional[dict] = None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.history: list[dict] = []
        self._accelerator = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.history = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self._rewrite()
        elif self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log
        if accelerator is not None and getattr(accelerator, "log_with", None):
            run = "/".join(self.output_dir.resolve().parts[-2:])
            init = {"tensorboard": {} if resume_step is None else {"purge_step": resume_step + 1},
                    "wandb": {"dir": str(self.output_dir), "name": run},
                    "trackio": {"name": run}, "mlflow": {"run_name": run}}
            accelerator.init_trackers(project, config=_scalars(config or {}), init_kwargs=init)
            self._accelerator = accelerator

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
        if self._accelerator is not None:
            values = {k: v for k, v in record.items()
                      if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if values:
                self._accelerator.log(values, step=int(step))
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
        """Finish the trackers (their files are complete afterwards). Not ``accelerator.end_training``:
        that would also end the process group the next stage of a pipeline still uses."""
        if self._accelerator is not None:
            for tracker in self._accelerator.trackers:
                tracker.finish()
            self._accelerator.trackers = []
            self._accelerator = None

"""Where hub-backed tasks get their rows: a local file, the hub, or the sample shipped here.

Every hub-backed task keeps its real ``datasets`` loading code (hub name, config, split, column
mapping); tests and the offline demo use the small sample file in the hub's exact format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rlenv.sources import DatasetSource

DATA_DIR = Path(__file__).parent / "data"


def load_rows(*, path: Optional[str], hub: Optional[str], config: Optional[str], split: str,
              sample: str, **source_kwargs: Any) -> DatasetSource:
    """A :class:`DatasetSource` from ``path`` (local jsonl/parquet/csv), else from the hub dataset
    ``hub``/``config``/``split`` (needs network), else from ``tasks/data/<sample>``."""
    if path is not None and hub is not None:
        raise ValueError("give either path= (local files) or hub= (a hub dataset name), not both")
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"data file {path!r} does not exist")
        return DatasetSource.from_files(path, split=split, **source_kwargs)
    if hub is not None:
        return DatasetSource.from_hub(hub, split=split, config=config, **source_kwargs)
    return DatasetSource.from_files(DATA_DIR / sample, split=split, **source_kwargs)

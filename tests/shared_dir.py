"""Build something once per test session, however many pytest-xdist workers run it.

Each xdist worker has its own ``basetemp`` (``<session>/popen-gwN``); their parent is the session's.
:func:`built_once` hands out a folder there under a file lock, so the first worker to ask builds
(the demo run, the SFT start) while the others wait for it and then reuse what it wrote. Without
xdist the folder is under the session's own ``basetemp``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


def session_root(tmp_path_factory) -> Path:
    """The folder every worker of this session shares."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str) -> Iterator[Path]:
    """``<session root>/<name>``, held under a lock for the duration of the ``with`` block: build
    into it if it lacks a finished marker, else read what is there."""
    root = session_root(tmp_path_factory)
    with FileLock(str(root / f"{name}.lock")):
        yield root / name

"""Shared fixtures: a tiny random model saved and reloaded through the normal HF path, and the
suite's fixed seeds and threads.

Every test starts from the same global RNG state (``random``, numpy, torch seeded with 0) and runs
torch on one intra-op thread, so its numbers are a function of its code, not of the test order or
of how busy the CPU is; subprocesses (CLI runs, ``accelerate launch``) inherit
``OMP_NUM_THREADS=1``. A test of what a user's default run does asks for ``default_threads``
(torch's own choice for this machine, read before the suite pinned anything).

    python -m pytest -q -n auto         # everything, as CI runs it (one pytest-xdist worker per core)
    python -m pytest -q -m "not slow"   # the fast default while developing (no end-to-end runs)

Under pytest-xdist each worker is its own process with these same settings; what several modules
share (the demo run, the SFT start) is built once per session under a file lock (tests/shared_dir.py).
"""

from __future__ import annotations

import os
import random

import pytest
import torch

#: torch's own intra-op thread count on this machine (what a user's run gets), read before pinning
DEFAULT_THREADS = torch.get_num_threads()
SEED = 0

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# subprocesses (torch reads it at start-up): one thread each, so two of them on a 2-core machine
# do not fight over the cores, and their numbers do not depend on the machine's core count
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _fixed_seeds_and_threads():
    """Each test: global RNGs seeded with :data:`SEED`, torch on one thread (restored afterwards)."""
    import numpy as np

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def default_threads() -> int:
    """Run the test on torch's own thread count for this machine, at least 2 (so that the intra-op
    threads really split the work): for tests of what a user's default run does. Returns it."""
    threads = max(2, DEFAULT_THREADS)
    torch.set_num_threads(threads)  # the autouse fixture, set up first, restores its own afterwards
    return threads


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of the ``tiny`` preset (Qwen2, ~0.8 M params, byte tokenizer, ChatML), saved once per session."""
    from rlenv.models.tiny import create_tiny_model

    return str(create_tiny_model(tmp_path_factory.mktemp("models") / "tiny", preset="tiny", seed=0))


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """An even smaller preset (2 layers, hidden 64) for tests that only need a working model."""
    from rlenv.models.tiny import create_tiny_model

    return str(create_tiny_model(tmp_path_factory.mktemp("models") / "micro", preset="micro", seed=0))


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module's tiny-model work, module-scoped fixtures included (the
    autouse per-test pinning starts too late for those); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- GPU tests: one marker ----------------------------------------------------------------------------
# `@pytest.mark.gpu` is the only thing a GPU test writes: without CUDA it is skipped here. A failed
# CUDA-graph capture is an error in every test (in production it is a counted warning).
os.environ.setdefault("RLENV_STRICT_CUDA_GRAPH", "1")


def pytest_collection_modifyitems(config, items):
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
        for item in gpu_tests:
            item.add_marker(skip)

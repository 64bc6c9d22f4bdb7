"""Shared fixtures: a tiny random model saved and reloaded through the normal HF path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    """Run a module's tiny-model work on one intra-op thread (restored afterwards): for ~1 M-parameter
    models one thread is as fast, and it keeps tests from crawling when the CPU is oversubscribed."""
    import torch

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

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

"""The offline model presets: ``preset:<name>`` resolves to a saved checkpoint of that preset's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlenv.models.tiny import TINY_PRESETS, resolve_model_path


@pytest.mark.parametrize("name", sorted(TINY_PRESETS))
def test_preset_resolves_to_its_own_shape(name, tmp_path):
    path = resolve_model_path(f"preset:{name}", cache_dir=tmp_path)
    cfg = json.loads((Path(path) / "config.json").read_text())
    for key, value in TINY_PRESETS[name].items():
        assert cfg[key] == value, (name, key)
    assert resolve_model_path(f"preset:{name}", cache_dir=tmp_path) == path  # cached, not rebuilt


def test_unknown_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_model_path(str(tmp_path / "nope"))

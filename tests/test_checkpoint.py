"""Checkpoints: atomic layout, manifest verification, skipping corrupt/incomplete ones, exact reload."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from trainers.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, resolve_resume, rng_state,
                                 set_rng_state, verify_checkpoint)
from trainers.config import SFTConfig
from trainers.sft import SFTTrainer

ROWS = [{"prompt": f"What is {a} + {b}?", "completion": f"<a>{a + b}</a>"} for a in range(6) for b in range(6)]


@pytest.fixture(scope="module")
def saved(micro_model_dir, tmp_path_factory):
    """A trainer after 2 steps with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("ckpt")
    cfg = SFTConfig(output_dir=str(out), learning_rate=1e-3, max_steps=2, save_steps=1, save_total_limit=3,
                    per_device_train_batch_size=4, progress_bar=False, report_to="none")
    trainer = SFTTrainer(micro_model_dir, cfg, train_dataset=ROWS)
    trainer.train()
    return trainer


def test_layout_and_manifest(saved):
    ckpts = list_checkpoints(saved.checkpoints_dir)
    assert [p.name for p in ckpts] == ["checkpoint-1", "checkpoint-2"]
    manifest = verify_checkpoint(ckpts[-1])
    assert manifest["step"] == 2
    files = set(manifest["files"])
    assert {"optimizer.pt", "scheduler.pt", "rng_state_0.pt", "trainer_state.json", "model/config.json",
            "model/model.safetensors", "model/tokenizer_config.json"} <= files
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["data"]["micro_index"] == 2
    # every .pt file loads with weights_only=True (no pickled code)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state_0.pt"):
        torch.load(ckpts[-1] / name, weights_only=True)
    # the model folder is a plain save_pretrained folder
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(ckpts[-1] / "model")
    for (n, a), b in zip(saved.unwrapped_model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), n
    assert not any(p.name.startswith(".tmp") for p in saved.checkpoints_dir.iterdir())


def test_corrupt_and_incomplete_are_skipped(saved, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(saved.checkpoints_dir, root)
    assert latest_checkpoint(root).name == "checkpoint-2"
    # flip one byte of the newest checkpoint's weights: it no longer matches its checksum
    weights = root / "checkpoint-2" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        verify_checkpoint(root / "checkpoint-2")
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        assert latest_checkpoint(root).name == "checkpoint-1"
    # a newer folder without a manifest (a crash mid-write) is skipped too
    shutil.copytree(root / "checkpoint-1", root / "checkpoint-3")
    (root / "checkpoint-3" / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="incomplete"):
        assert latest_checkpoint(root).name == "checkpoint-1"
    # an explicit path is verified on load; a missing path is a clear error
    with pytest.raises(CheckpointError, match="not a folder"):
        resolve_resume(str(root / "nope"), root)
    assert resolve_resume("latest", tmp_path / "empty") is None


def test_save_total_limit(micro_model_dir, tmp_path):
    cfg = SFTConfig(output_dir=str(tmp_path), learning_rate=1e-3, max_steps=3, save_steps=1, save_total_limit=2,
                    per_device_train_batch_size=4, progress_bar=False, report_to="none")
    SFTTrainer(micro_model_dir, cfg, train_dataset=ROWS).train()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-2", "checkpoint-3"]


def test_rng_state_roundtrip(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])

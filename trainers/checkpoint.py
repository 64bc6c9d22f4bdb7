"""Atomic, verifiable training checkpoints.

A checkpoint is a folder ``<output_dir>/checkpoints/checkpoint-<step>`` holding:

- ``model/`` — the model in Hugging Face ``save_pretrained`` format (safetensors; the adapter only
  under LoRA) plus the tokenizer, loadable with ``from_pretrained`` as is;
- ``optimizer.pt``, ``scheduler.pt`` — their ``state_dict`` (DDP / single process), or
  ``accelerate_state/`` written by :meth:`accelerate.Accelerator.save_state` when the optimizer is
  sharded (DeepSpeed, FSDP);
- ``extra-<name>.safetensors`` — extra trained modules (a PPO value head);
- ``rng_state_<rank>.pt`` — python, numpy, torch (and CUDA) RNG states of each process;
- ``trainer_state.json`` — step, data position and whatever else the trainer needs to continue;
- ``manifest.json`` — written last: every file's size and sha256.

It is written into a hidden temporary folder, every file is fsynced, then the folder is renamed into
place in one ``os.replace``, so a crash leaves either a complete checkpoint or none.
:func:`latest_checkpoint` skips folders whose manifest is missing or does not match (incomplete or
corrupt), and loading verifies the manifest again. ``torch.load`` is only ever called with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

MANIFEST = "manifest.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt."""


# -- files ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [root] + [p for p in root.rglob("*") if p.is_dir()]:
        _fsync_dir(d)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_manifest(folder: Path, meta: dict) -> None:
    """Record every file's size and sha256 in ``manifest.json`` (fsynced)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[str(p.relative_to(folder))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    data = dict(meta, format=1, files=files)
    with open(folder / MANIFEST, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify_checkpoint(folder: str | os.PathLike) -> dict:
    """Check ``folder`` against its manifest; returns the manifest or raises :class:`CheckpointError`."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST}: the checkpoint is incomplete")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{mpath} is unreadable ({e}): the checkpoint is corrupt") from None
    for rel, meta in files.items():
        p = folder / rel
        if not p.is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {rel}")
        if p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {folder}: {rel} does not match its checksum (corrupt)")
    return manifest


def _remove_leftovers(root: Path) -> None:
    """Delete the hidden folders an interrupted save or deletion left behind (``.tmp-…``, ``.old-…``)."""
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith((".tmp-checkpoint-", ".old-checkpoint-")):
            shutil.rmtree(p, ignore_errors=True)


def _delete_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder so that no half-deleted ``checkpoint-<step>`` is ever visible: it
    is renamed to a hidden name first (one ``os.replace``), then removed."""
    trash = folder.with_name(f".old-{folder.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Checkpoint folders under ``root`` (``checkpoint-<step>``), oldest first (unverified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Optional[Path]:
    """The newest checkpoint under ``root`` that passes :func:`verify_checkpoint`; incomplete or
    corrupt ones are skipped with a warning. None when there is none."""
    for p in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(p)
            return p
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint: {e}", stacklevel=2)
    return None


# -- RNG -----------------------------------------------------------------------------------------
def rng_state() -> dict:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- model weights -------------------------------------------------------------------------------
def load_model_weights(model: Any, model_dir: str | os.PathLike) -> None:
    """Load weights written by ``save_pretrained`` into an existing (unwrapped) model, exactly.

    Under LoRA (a peft model) ``model_dir`` holds the adapter; otherwise the full safetensors
    shards. Keys absent from the files must be tied to a loaded weight (tied embeddings)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(model_dir / "adapter_model.safetensors"))
        return
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"no *.safetensors weights in {model_dir}")
    state = {}
    for s in shards:
        state.update(load_file(s))
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded_ptrs = {p.data_ptr() for n, p in model.state_dict().items() if n in state}
    own = model.state_dict()
    untied = [k for k in missing if own[k].data_ptr() not in loaded_ptrs]
    if untied or unexpected:
        raise CheckpointError(f"weights in {model_dir} do not fit the model: missing {untied[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")


def _sharded_optimizer(accelerator: Any) -> bool:
    return accelerator is not None and str(accelerator.distributed_type) in (
        "DistributedType.DEEPSPEED", "DistributedType.FSDP", "DEEPSPEED", "FSDP")


# -- save / load ---------------------------------------------------------------------------------
def save_checkpoint(root: str | os.PathLike, step: int, *, accelerator: Any, model: Any, tokenizer: Any,
                    optimizer: Any, scheduler: Any, trainer_state: dict, extra_modules: Optional[dict] = None,
                    save_total_limit: Optional[int] = None) -> Path:
    """Write checkpoint ``checkpoint-<step>`` under ``root`` atomically; every process must call it.

    ``model`` is the (possibly accelerate-wrapped) trained model; ``extra_modules`` maps names to
    further trained modules. Older checkpoints beyond ``save_total_limit`` are deleted afterwards.
    Returns the checkpoint's path.
    """
    from safetensors.torch import save_file

    root = Path(root)
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)  # a killed run's temp folders (never loaded: they have no final name)
        tmp.mkdir()
    accelerator.wait_for_everyone()

    from rlenv.engines.full_weights import adapter_state_dict, full_state_dict

    unwrapped = accelerator.unwrap_model(model)
    # full tensors, gathered block by block under FSDP2 / ZeRO-3 (a collective), kept by the main process
    is_peft = hasattr(unwrapped, "peft_config")
    state_dict = (adapter_state_dict if is_peft else full_state_dict)(model, keep=main)
    if main:
        unwrapped.save_pretrained(tmp / "model", state_dict=state_dict, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        for name, module in (extra_modules or {}).items():
            sd = {k: v.detach().contiguous().cpu() for k, v in accelerator.unwrap_model(module).state_dict().items()}
            save_file(sd, tmp / f"extra-{name}.safetensors")
        with open(tmp / "trainer_state.json", "w") as f:
            json.dump(trainer_state, f, indent=1)
    if _sharded_optimizer(accelerator):
        accelerator.save_state(str(tmp / "accelerate_state"))
    elif main:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()

    if main:
        _fsync_tree(tmp)
        write_manifest(tmp, {"step": step, "num_processes": accelerator.num_processes})
        if final.exists():  # re-saving a step: move the old one out of the way first
            _delete_checkpoint(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        if save_total_limit:
            for old in list_checkpoints(root)[:-save_total_limit]:
                _delete_checkpoint(old)
            _fsync_dir(root)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(folder: str | os.PathLike, *, accelerator: Any, model: Any, optimizer: Any,
                    scheduler: Any, extra_modules: Optional[dict] = None) -> dict:
    """Verify and restore a checkpoint into the prepared objects; returns its ``trainer_state``.

    Raises :class:`CheckpointError` when the folder is incomplete or corrupt."""
    from safetensors.torch import load_file

    folder = Path(folder)
    verify_checkpoint(folder)
    if _sharded_optimizer(accelerator):
        accelerator.load_state(str(folder / "accelerate_state"))
    else:
        load_model_weights(accelerator.unwrap_model(model), folder / "model")
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    for name, module in (extra_modules or {}).items():
        accelerator.unwrap_model(module).load_state_dict(load_file(folder / f"extra-{name}.safetensors"))
    rng_file = folder / f"rng_state_{accelerator.process_index}.pt"
    if not rng_file.exists():
        warnings.warn(f"{rng_file.name} not in {folder} (different number of processes?); using rank 0's")
        rng_file = folder / "rng_state_0.pt"
    set_rng_state(torch.load(rng_file, weights_only=True))
    return json.loads((folder / "trainer_state.json").read_text())


def resolve_resume(resume: Optional[str], checkpoints_dir: str | os.PathLike) -> Optional[Path]:
    """Turn ``resume_from_checkpoint`` (None | "latest" | a path) into a checkpoint folder.

    "latest" with no checkpoint yet means a fresh start (so the same command both starts and resumes
    a run); an explicit path that does not exist is an error."""
    if resume is None or resume is False:
        return None
    if resume == "latest" or resume is True:
        return latest_checkpoint(checkpoints_dir)
    p = Path(resume)
    if not p.is_dir():
        raise CheckpointError(f"resume_from_checkpoint={resume!r} is not a folder; pass a "
                              f"checkpoint-<step> folder, 'latest' or None")
    return p

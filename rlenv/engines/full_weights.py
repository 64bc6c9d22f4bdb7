"""One way to see a model's full weights, however training shards them.

Under FSDP2 a parameter is a ``DTensor`` holding this rank's slice; under DeepSpeed ZeRO-3 it is an
empty partition; under DDP or one process it is the whole tensor. Everything that reads weights —
the vLLM weight sync, LoRA merging, the model export, checkpoints, HF generation — goes through
this module instead of ``state_dict()``:

* :func:`iter_full_weights` streams ``(hf_name, tensor)`` pairs **gathered one block at a time**
  (``DTensor.full_tensor()`` / ``deepspeed.zero.GatheredParameters``), with a peft LoRA adapter
  merged **beside** the base weight (``W + scale·B·A`` computed into a new tensor): the trained
  model's frozen base weights are never written, so repeated syncs cannot drift them (merging in
  place and unmerging after is not exact in bf16).
* :func:`gathered` holds the whole model gathered for a block of work (generation, evaluation):
  every rank gathers once, then forwards run locally, so ranks may run *different* numbers of
  forwards inside it (rank 0 evaluating alone, ranks with different prompt counts) without a hang.
* :func:`full_state_dict` / :func:`adapter_state_dict` collect the stream for an export.

Every function here is a collective under sharding: all ranks must call it, in the same order.
It is a no-op gather (plain reads) otherwise.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator, Optional

import torch

_BLOCK = re.compile(r"^(.*?\.(?:layers|h|blocks)\.\d+)\.")
_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def unwrap_model(model: Any) -> Any:
    """Strip DDP/DeepSpeed/accelerate wrappers (``.module``) and ``torch.compile``'s ``_orig_mod``."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model or not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _is_dtensor(t: Any) -> bool:
    return hasattr(t, "full_tensor") and hasattr(t, "device_mesh")


def _is_zero3(t: Any) -> bool:
    return hasattr(t, "ds_id") and hasattr(t, "ds_status")


def sharding(model: Any) -> Optional[str]:
    """``"fsdp2"``, ``"zero3"`` or None: how ``model``'s parameters are sharded."""
    for p in unwrap_model(model).parameters():
        if _is_dtensor(p):
            return "fsdp2"
        if _is_zero3(p):
            return "zero3"
    return None


def is_main_rank() -> bool:
    """True on rank 0 of the default process group (or without one)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# -- per-block streaming ------------------------------------------------------------------------------
def _clean(name: str) -> str:
    for w in _WRAPPERS:
        name = name.replace(w, "")
    return name


def hf_name(name: str) -> Optional[str]:
    """A (peft / wrapped) parameter name → its plain HF checkpoint name; None for adapter-only tensors."""
    name = _clean(name)
    if "lora_" in name or ".original_module." in name:
        return None
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


def group_key(name: str) -> str:
    """Weights gathered and sent together: one transformer block, or embedding + tied head."""
    name = _clean(name)
    match = _BLOCK.match(name)
    if match:
        return match.group(1)
    if "lm_head" in name or "embed_tokens" in name or name.endswith(("wte.weight", "embed_in.weight")):
        return "embeddings"
    return name.rsplit(".", 1)[0]


def _named_tensors(root: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters (tied ones once) and persistent buffers, in module order."""
    out = list(root.named_parameters())
    for prefix, module in root.named_modules():
        skip = getattr(module, "_non_persistent_buffers_set", set())
        for bname, buf in module._buffers.items():
            if buf is not None and bname not in skip:
                out.append((f"{prefix}.{bname}" if prefix else bname, buf))
    return out


def _groups(named: list) -> list[list[tuple[str, torch.Tensor]]]:
    groups: dict[str, list] = {}
    for name, t in named:
        groups.setdefault(group_key(name), []).append((name, t))
    return list(groups.values())


@contextlib.contextmanager
def _full_tensors(tensors: list, keep: bool):
    """Full copies of ``tensors`` (a collective under sharding). ``keep=False``: take part in the
    gather but return Nones (ranks that only help the sender)."""
    zero3 = [t for t in tensors if _is_zero3(t)]
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(zero3, modifier_rank=None):
            # clone: the partitions are freed again when the context exits
            yield [t.detach().clone() if keep else None for t in tensors]
        return
    out = []
    for t in tensors:
        full = t.full_tensor() if _is_dtensor(t) else t
        out.append(full.detach() if keep else None)
    yield out


def iter_full_parameters(model: Any, keep: Optional[bool] = None,
                         select: Optional[Callable[[str], bool]] = None) -> Iterator[dict]:
    """One ``{raw_name: full tensor}`` dict per block (see :func:`group_key`), gathered block by block.

    ``select(name)`` limits the parameters (the same on every rank). ``keep``: whether this rank
    keeps the tensors (default: rank 0 when sharded, every rank otherwise); other ranks get dicts of
    Nones after taking part in the gather."""
    root = unwrap_model(model)
    sharded = sharding(root) is not None
    keep = (is_main_rank() or not sharded) if keep is None else keep
    named = [(n, t) for n, t in _named_tensors(root) if select is None or select(n)]
    for group in _groups(named):
        names = [n for n, _ in group]
        with _full_tensors([t for _, t in group], keep) as full:
            yield dict(zip(names, full))


def _lora_layers(root: torch.nn.Module) -> dict:
    """Module prefix → peft LoRA layer, for the layers whose delta is merged into the stream."""
    try:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return {}
    layers = {}
    for prefix, module in root.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        active = [a for a in module.active_adapters if a not in module.merged_adapters]
        if module.disable_adapters or not active:
            continue
        if not isinstance(module, LoraLinear):
            raise NotImplementedError(f"{prefix}: LoRA on {type(module.base_layer).__name__} layers cannot be "
                                      "merged for a weight sync or export; target linear layers only")
        if any(module.lora_variant.get(a) is not None for a in active):
            raise NotImplementedError(f"{prefix}: LoRA variants (DoRA, …) cannot be merged for a weight sync "
                                      "or export; use plain LoRA")
        layers[_clean(prefix)] = (module, active)
    return layers


def _merged(tensors: dict, layers: dict) -> dict:
    """``tensors`` with each LoRA layer's base weight replaced by ``W + scale·B·A`` (a new tensor,
    summed in float32, cast to ``W``'s dtype)."""
    out = {}
    for name, t in tensors.items():
        clean = _clean(name)
        prefix = clean.rsplit(".base_layer.weight", 1)[0] if clean.endswith(".base_layer.weight") else None
        if t is None or prefix not in layers:
            out[name] = t
            continue
        module, active = layers[prefix]
        merged = t.float()
        for a in active:
            A = tensors.get(f"{name.rsplit('.base_layer.weight', 1)[0]}.lora_A.{a}.weight")
            B = tensors.get(f"{name.rsplit('.base_layer.weight', 1)[0]}.lora_B.{a}.weight")
            if A is None or B is None:
                raise RuntimeError(f"{prefix}: adapter {a!r} weights were not found next to its base weight")
            delta = B.float() @ A.float()
            merged = merged + (delta.T if module.fan_in_fan_out else delta) * module.scaling[a]
        out[name] = merged.to(t.dtype)
    return out


def iter_full_weights(model: Any, keep: Optional[bool] = None,
                      tied_head: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's full weights under HF checkpoint names, one block gathered at a time, with an
    active peft LoRA adapter merged beside the base (the model is never modified), and
    ``lm_head.weight`` present even when tied to the input embedding (vLLM keeps a separate
    ``lm_head`` that is only rebuilt when that name arrives; ``tied_head=False`` leaves it out, as
    an HF checkpoint does). A collective under sharding; ranks that do not ``keep`` yield
    ``(name, None)``."""
    root = unwrap_model(model)
    layers = _lora_layers(root)
    names = {hf_name(n) for n, _ in _named_tensors(root)}
    tied = (tied_head and getattr(getattr(root, "config", None), "tie_word_embeddings", False)
            and "lm_head.weight" not in names)
    seen = set()
    for tensors in iter_full_parameters(root, keep):
        for name, t in _merged(tensors, layers).items():
            hf = hf_name(name)
            if hf is None or hf in seen:
                continue
            seen.add(hf)
            yield hf, t
            if tied and hf.endswith("embed_tokens.weight"):
                yield "lm_head.weight", t  # right after the embedding: they travel in one bucket


def weight_metadata(model: Any) -> list[tuple[str, torch.dtype, tuple]]:
    """``(hf_name, dtype, full shape)`` of every tensor :func:`iter_full_weights` yields, in the same
    order, read without gathering anything (what a receiver sizes its buffers from)."""
    root = unwrap_model(model)
    names = {hf_name(n) for n, _ in _named_tensors(root)}
    tied = getattr(getattr(root, "config", None), "tie_word_embeddings", False) and "lm_head.weight" not in names
    out, seen = [], set()
    for group in _groups(_named_tensors(root)):
        for raw, t in group:
            hf = hf_name(raw)
            if hf is None or hf in seen:
                continue
            seen.add(hf)
            shape = tuple(getattr(t, "ds_shape", None) or t.shape)  # ZeRO-3 keeps the full shape aside
            out.append((hf, t.dtype, shape))
            if tied and hf.endswith("embed_tokens.weight"):
                out.append(("lm_head.weight", t.dtype, shape))
    return out


def full_state_dict(model: Any, keep: Optional[bool] = None, tied_head: bool = False) -> dict:
    """:func:`iter_full_weights` collected on the CPU (LoRA merged; a tied ``lm_head.weight`` left out
    unless ``tied_head``, as ``save_pretrained`` writes it); empty on ranks that do not keep."""
    out = {}
    for name, t in iter_full_weights(model, keep, tied_head):
        if t is not None:
            out[name] = t.detach().to("cpu").clone().contiguous()
    return out


def adapter_state_dict(model: Any, keep: Optional[bool] = None) -> dict:
    """The full trainable peft adapter tensors (``lora_*`` and ``modules_to_save``) on the CPU under
    the peft model's own parameter names — pass it as ``state_dict=`` to peft's ``save_pretrained``,
    which keeps the adapter's keys. Empty on ranks that do not keep."""
    full = {}
    for tensors in iter_full_parameters(model, keep, select=lambda n: "lora_" in n or "modules_to_save" in n):
        full.update({_clean(n): t.detach().to("cpu").clone() for n, t in tensors.items() if t is not None})
    return full


# -- the whole model, gathered for a while ---------------------------------------------------------------
@contextlib.contextmanager
def gathered(model: Any):
    """Inside, every parameter of ``model`` (the *prepared* model: FSDP2 module or DeepSpeed engine)
    is full on every rank and forwards make no collectives; on exit the shards are restored.
    Entering and leaving are collectives under sharding. A no-op for unsharded models.

    FSDP2: each FSDP unit is unsharded once and kept unsharded through its forwards
    (``set_reshard_after_forward(False)``, as torch documents for evals). ZeRO-3: all parameters
    are gathered (``GatheredParameters``) and DeepSpeed's per-module fetch/release hooks are
    lifted for the duration, since a release would re-partition a parameter mid-generation.
    """
    kind = sharding(model)
    if kind == "fsdp2":
        with _fsdp2_gathered(unwrap_model(model)):
            yield unwrap_model(model)
    elif kind == "zero3":
        with _zero3_gathered(model):
            yield unwrap_model(model)
    else:
        yield unwrap_model(model)


@contextlib.contextmanager
def _fsdp2_gathered(root: torch.nn.Module):
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    # set_reshard_after_forward has no getter: remember each group's post-forward mesh (what the
    # setter writes) so training gets its own resharding back
    saved = []
    for u in units:
        state = u._get_fsdp_state()
        saved.append((state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in state._fsdp_param_groups]))
    for u in units:
        u.unshard()
        u.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for u, (auto, infos) in zip(units, saved):
            u.reshard()
            state = u._get_fsdp_state()
            state._auto_reshard_after_forward = auto
            for g, info in zip(state._fsdp_param_groups, infos):
                g.post_forward_mesh_info = info


@contextlib.contextmanager
def _zero3_gathered(engine: Any):
    import deepspeed

    root = unwrap_model(engine)
    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
    with deepspeed.zero.GatheredParameters(list(root.parameters()), modifier_rank=None):
        start = None
        if offload is not None:
            for p in root.parameters():
                p.ds_active_sub_modules.clear()
            for hook in list(offload.forward_hooks) + list(offload.backward_hooks):
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
            # the root's start-of-forward hook checks, with a collective, that every rank traced the
            # same modules: lift it too, keeping its function to put it back first in line
            handle = getattr(offload, "fwd_pre_hook", None)
            if handle is not None:
                start = (handle.id, offload.module._forward_pre_hooks.pop(handle.id, None))
        try:
            yield
        finally:
            if offload is not None:
                if start is not None and start[1] is not None:
                    hooks = offload.module._forward_pre_hooks
                    rest = list(hooks.items())
                    hooks.clear()
                    hooks[start[0]] = start[1]
                    hooks.update(rest)
                coordinator = getattr(offload, "param_coordinator", None)
                if coordinator is not None and not coordinator.is_invalid_trace():
                    coordinator._invalidate_trace()  # the generation forwards broke the recorded order
                offload._register_deepspeed_module(offload.module)

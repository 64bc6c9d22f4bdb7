"""Which parallelism a run uses, set up through accelerate, and said out loud.

``accelerate launch --config_file examples/accelerate/<x>.yaml`` asks for a parallelism through
environment variables (``ACCELERATE_USE_FSDP``, ``FSDP_VERSION``, ``ACCELERATE_USE_DEEPSPEED`` …).
:func:`make_accelerator` builds the :class:`accelerate.Accelerator` that honours them and
:func:`check_parallelism` stops a run whose launcher asked for sharding but got something else —
a machine without GPUs used to turn the FSDP config into two independent processes
(``DistributedType.NO``) or, with ``ACCELERATE_USE_CPU=1``, into plain DDP, and say nothing.

On a machine without GPUs the launched ranks form a gloo group, and:

* FSDP2 runs accelerate's own FSDP2 path (``fsdp2_prepare_model``, its optimizer handling, state
  dicts and checkpoints) — the same code a GPU run takes. accelerate only enables FSDP for GPU-like
  devices, so the accelerator's state is switched to FSDP after construction, with the plugin built
  from the launcher's ``FSDP_*`` variables.
* DeepSpeed runs on its CPU accelerator (gloo instead of NCCL; needs ``pip install deepspeed``).

:func:`describe` gives ``{"type", "world_size", "backend"}`` with ``type`` one of :data:`KINDS`;
the loop logs it and the stage pipeline writes it to ``summary.json``.

Collectives wait at most :func:`collective_timeout` seconds (``RLENV_COLLECTIVE_TIMEOUT``, default
1800). A rank that waits longer gets :class:`CollectiveTimeout` naming the step, the phase and the
rank (gloo raises in the waiting call; NCCL's watchdog aborts the process after the same timeout).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Optional

import torch

#: the parallelisms a run can report; anything else is refused before the first step
KINDS = ("none", "ddp", "fsdp2", "zero2", "zero3")
SHARDED = ("fsdp2", "zero3")  # parameters are sharded: every rank must take part in every forward
DEFAULT_COLLECTIVE_TIMEOUT_S = 1800.0


_FSDP1 = ("the accelerate config asks for FSDP version 1, which rlenv does not support: set `fsdp_version: 2` "
          "in its fsdp_config (see examples/accelerate/fsdp.yaml)")


class DistributedSetupError(RuntimeError):
    """The parallelism asked for cannot run, or is not what accelerate set up."""


class CollectiveTimeout(RuntimeError):
    """A rank waited longer than the collective timeout for the others (or a peer died)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def world_size_from_env() -> int:
    """Processes the launcher started (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def requested() -> str:
    """The parallelism the launcher asked for: ``fsdp1``/``fsdp2``, ``zero<stage>``, ``ddp`` or
    ``none``, read from the variables ``accelerate launch`` sets from its config."""
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp2" if os.environ.get("FSDP_VERSION", "1").strip() == "2" else "fsdp1"
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").strip()
        return f"zero{stage}" if stage.isdigit() else "zero"  # stage from a DeepSpeed json file
    return "ddp" if world_size_from_env() > 1 else "none"


def collective_timeout() -> float:
    """Seconds a collective may wait (``RLENV_COLLECTIVE_TIMEOUT``, default 1800)."""
    raw = os.environ.get("RLENV_COLLECTIVE_TIMEOUT", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_COLLECTIVE_TIMEOUT_S
    except ValueError:
        raise DistributedSetupError(f"RLENV_COLLECTIVE_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise DistributedSetupError(f"RLENV_COLLECTIVE_TIMEOUT must be > 0 seconds, got {value}")
    return value


def _has_accelerator_device() -> bool:
    return torch.cuda.is_available() or bool(getattr(torch, "xpu", None) and torch.xpu.is_available())


def make_accelerator(**kwargs) -> Any:
    """An :class:`accelerate.Accelerator` with ``kwargs``, set up for what the launcher asked
    (see the module docstring), with the collective timeout applied. Raises
    :class:`DistributedSetupError` when the result is not what was asked for."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import InitProcessGroupKwargs

    asked = requested()
    if asked == "fsdp1":  # refused before accelerate builds (and on CPU, rejects) an FSDP1 plugin
        raise DistributedSetupError(_FSDP1)
    timeout = datetime.timedelta(seconds=collective_timeout())
    kwargs = dict(kwargs)
    kwargs["kwargs_handlers"] = list(kwargs.get("kwargs_handlers") or []) + [InitProcessGroupKwargs(timeout=timeout)]
    on_cpu = world_size_from_env() > 1 and not _has_accelerator_device()
    if on_cpu and asked.startswith("zero"):
        _require_deepspeed()
        # accelerate finds no distributed backend for a CPU DeepSpeed run and would count one process
        PartialState(backend="gloo", timeout=timeout)
    elif on_cpu:
        kwargs["cpu"] = True  # the ranks form a gloo group instead of running independently

    def build():
        acc = Accelerator(**kwargs)
        if on_cpu and asked in ("fsdp1", "fsdp2"):
            _fsdp_on_cpu(acc)
        return acc

    try:
        accelerator = build()
    except ValueError as e:
        # accelerate keeps one process-wide state; a single process that built an Accelerator with
        # another precision before (a previous stage, another library) may start afresh
        if "already been initialized" not in str(e) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = build()
    check_parallelism(accelerator, asked)
    return accelerator


def _require_deepspeed() -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise DistributedSetupError(f"the launcher asked for DeepSpeed, which is not installed: run "
                                    f"`pip install 'rlenv-rlvr[deepspeed]'` ({e})") from None


def _fsdp_on_cpu(accelerator: Any) -> None:
    """Switch a gloo (``MULTI_CPU``) accelerator to accelerate's FSDP path, with the plugin the
    launcher's ``FSDP_*`` variables describe (accelerate enables FSDP only on GPU-like devices)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type == DistributedType.FSDP:
        return
    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_VERSION, FSDP_AUTO_WRAP_POLICY, …
    if plugin.fsdp_version != 2:
        raise DistributedSetupError(_FSDP1)
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def describe(accelerator: Any) -> dict:
    """``{"type", "world_size", "backend"}`` of the parallelism in use; ``type`` is one of
    :data:`KINDS` (``fsdp1``, ``zero0``/``zero1`` when set up outside rlenv)."""
    from accelerate.utils import DistributedType

    dt = accelerator.distributed_type
    world = int(accelerator.num_processes)
    if dt == DistributedType.FSDP:
        kind = "fsdp2" if getattr(accelerator, "is_fsdp2", False) else "fsdp1"
    elif dt == DistributedType.DEEPSPEED:
        kind = f"zero{accelerator.state.deepspeed_plugin.zero_stage}"
    elif world > 1:
        kind = "ddp"
    else:
        kind = "none"
    backend = getattr(accelerator.state, "backend", None)
    if backend is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        backend = torch.distributed.get_backend()
    return {"type": kind, "world_size": world, "backend": str(backend) if backend else "none"}


def check_parallelism(accelerator: Any, asked: Optional[str] = None) -> dict:
    """Raise :class:`DistributedSetupError` when what accelerate set up is unsupported or is not
    what the launcher asked for; return :func:`describe`."""
    asked = requested() if asked is None else asked
    got = describe(accelerator)
    launched = world_size_from_env()
    if launched > 1 and got["world_size"] != launched:
        raise DistributedSetupError(
            f"{launched} processes were launched but accelerate set up {got['world_size']} "
            f"({accelerator.distributed_type}): each would train alone. On a machine without GPUs "
            "launch with `ACCELERATE_USE_CPU=1` or let rlenv build the accelerator (trainers do)")
    if asked == "fsdp1" or got["type"] == "fsdp1":
        raise DistributedSetupError(_FSDP1)
    if got["type"] not in KINDS:
        raise DistributedSetupError(f"DeepSpeed stage {got['type'][4:]} is not supported: use zero_stage 2 "
                                    "(optimizer and gradients sharded) or 3 (parameters too)")
    if asked not in ("none", "ddp", "zero") and asked != got["type"]:
        raise DistributedSetupError(
            f"the launcher asked for {asked} but accelerate set up {got['type']} "
            f"({accelerator.distributed_type}, {got['world_size']} processes, backend {got['backend']}); "
            "refusing to train with a parallelism nobody asked for — see docs/scaling.md")
    return got


def is_sharded(accelerator: Any) -> bool:
    """True when parameters are sharded across ranks (FSDP2, ZeRO-3): every forward of the
    policy is then a collective that all ranks must run in lockstep."""
    return describe(accelerator)["type"] in SHARDED


# -- collectives that fail loudly --------------------------------------------------------------------
_TIMEOUT_MARKS = ("timed out", "timeout", "connection closed by peer", "connection reset by peer")


@contextlib.contextmanager
def collective_guard(accelerator: Any, where):
    """Turn a collective that timed out (or whose peer died) into :class:`CollectiveTimeout`
    naming ``where()`` (e.g. ``"step 3, train"``) and this rank."""
    try:
        yield
    except CollectiveTimeout:
        raise
    except RuntimeError as e:  # torch.distributed's DistBackendError is a RuntimeError
        text = str(e).lower()
        if accelerator.num_processes == 1 or not any(m in text for m in _TIMEOUT_MARKS):
            raise
        rank, world = accelerator.process_index, accelerator.num_processes
        raise CollectiveTimeout(
            f"rank {rank} of {world}: a collective at {where()} did not complete — it waited more than "
            f"the collective timeout ({collective_timeout():.0f} s, RLENV_COLLECTIVE_TIMEOUT) or another rank "
            f"died; the ranks took different paths or one is stuck. Underlying error: {str(e).splitlines()[0][:300]}"
        ) from e


def mean_over_ranks(accelerator: Any, metrics: dict) -> dict:
    """Each metric averaged over the ranks that reported it. Ranks may report different keys (a rank
    whose micro-batches were all placeholders, a verifier failure on one rank only): the key sets
    are united first — reducing tensors of different lengths would hang or mix keys up."""
    if accelerator.num_processes == 1:
        return metrics
    import torch.distributed as dist

    key_sets = [None] * accelerator.num_processes
    dist.all_gather_object(key_sets, sorted(metrics))
    keys = sorted(set().union(*key_sets))
    if not keys:
        return {}
    device = accelerator.device
    values = torch.tensor([float(metrics.get(k, 0.0)) for k in keys], dtype=torch.float64, device=device)
    present = torch.tensor([float(k in metrics) for k in keys], dtype=torch.float64, device=device)
    values = accelerator.reduce(values * present, reduction="sum")
    present = accelerator.reduce(present, reduction="sum")
    return {k: float(v / n) for k, v, n in zip(keys, values.tolist(), present.tolist()) if n > 0}


def all_ranks_max(accelerator: Any, value: float) -> float:
    """The largest ``value`` over all ranks (the value itself with one process)."""
    if accelerator.num_processes == 1:
        return float(value)
    t = torch.tensor([float(value)], device=accelerator.device)
    return float(accelerator.reduce(t, reduction="max").item())


# -- the reference model, placed like the policy ---------------------------------------------------------
def prepare_reference(ref: Any, accelerator: Any) -> None:
    """Place a :class:`trainers.modeling.Reference`'s frozen model like the policy: sharded with
    accelerate's own FSDP2 preparation under FSDP2, a DeepSpeed ZeRO-3 inference engine under
    ZeRO-3, moved to the device otherwise. A reference that shares the policy (LoRA) needs nothing."""
    if ref is None:
        return
    ref.autocast = accelerator.autocast
    if ref.frozen is None:
        return
    kind = describe(accelerator)["type"]
    if kind == "fsdp2":
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        # not accelerator.prepare(): that would register it for save_state and checkpoint it too
        accelerator.state.fsdp_plugin.set_auto_wrap_policy(ref.frozen)
        ref.frozen = fsdp2_prepare_model(accelerator, ref.frozen)
    elif kind == "zero3":
        ref.frozen = _zero3_inference_engine(ref.frozen, accelerator)
    else:
        ref.frozen.to(accelerator.device)


def _zero3_inference_engine(model: Any, accelerator: Any) -> Any:
    """``model`` wrapped in a DeepSpeed ZeRO-3 engine without optimizer (parameters partitioned like
    the policy's); the config is the policy's, minus the optimizer, scheduler and optimizer offload."""
    import copy as _copy

    import deepspeed

    config = _copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config.get("zero_optimization", {}).pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def refuse_unsupported(accelerator: Any, *, extra_modules: dict, trainer: str) -> None:
    """Raise :class:`DistributedSetupError` before the first step for combinations rlenv does not
    support (see the support matrix in docs/scaling.md)."""
    kind = describe(accelerator)["type"]
    if extra_modules and kind in ("fsdp2", "zero2", "zero3"):
        raise DistributedSetupError(
            f"{trainer} trains extra modules ({', '.join(extra_modules)}) next to the policy, which accelerate "
            f"cannot prepare together under {kind} (one model per FSDP2 / DeepSpeed preparation); run it "
            "with DDP (examples/accelerate/ddp.yaml) or use GRPO / online DPO, which need no value head")

"""The one training loop every trainer subclasses (:class:`BaseTrainer`), on accelerate.

The base class does everything that is not the algorithm: model loading (a path, hub id or
``preset:tiny``; LoRA through peft or full fine-tuning; gradient checkpointing), the reference model
(adapters disabled under LoRA, else a frozen model loaded like the policy and sharded like it, none
when not needed), accelerate device placement, mixed precision and distribution (DDP, DeepSpeed
ZeRO-2/3 or FSDP2 via ``accelerate launch``, checked and reported by :mod:`trainers.distributed`),
AdamW, the LR schedule (``transformers.get_scheduler``), gradient accumulation
(``accelerator.accumulate``), clipping, logging (``metrics.jsonl``, the ``report_to`` trackers
through accelerate, a curve PNG), a
tqdm progress bar, evaluation of the env's pass rate, atomic checkpoints, exact resume and a
graceful stop on SIGINT/SIGTERM (a final checkpoint, then return).

Vocabulary: a **step** is one call of :meth:`BaseTrainer.training_step` on one unit of *step data*
(a data batch for the offline trainers, one rollout for the online ones). Its micro-batches go
through ``accelerator.accumulate``; every ``gradient_accumulation_steps`` micro-batches make one
optimizer **update**. ``global_step`` counts steps; ``max_steps`` bounds it.

Subclass hooks (override what you need; the defaults serve the offline trainers):

``config_class``            the config dataclass the constructor checks against.
``model_kind``              ``"causal_lm"`` (default) or ``"reward"`` (sequence classification).
``needs_reference()``       True to keep a reference model in ``self.ref`` (a
                            :class:`trainers.modeling.Reference`; ``self.ref(**inputs)`` is a no-grad
                            forward). Default False. GRPO: ``config.beta > 0``.
``setup()``                 called at the end of ``__init__``: tokenize data, build an engine, add
                            trained modules with :meth:`add_module` (a PPO value head).
``num_examples()``          rows of the offline data set (``self.train_rows`` by default).
``collate(rows)``           a list of data rows → a batch dict of tensors (offline trainers).
``next_step_data()``        the data of one step. Default: ``gradient_accumulation_steps``
                            micro-batches of ``self.train_rows`` for this process, reshuffled each
                            epoch. Online trainers return a rollout (``RolloutBatch``).
``micro_batches(data)``     the step data split into micro-batches, fed in order to
                            ``compute_loss``. Default: ``data`` itself (already a list). The count
                            must be a multiple of ``gradient_accumulation_steps``.
``updates_per_step()``      optimizer updates one step makes (sizes the LR schedule). Default 1;
                            GRPO with μ iterations and mini-batches returns more.
``compute_loss(model, batch) -> (loss, metrics)``  **required**: the scalar loss of one
                            micro-batch (already averaged over it) and a dict of float metrics.
                            ``model`` is the prepared (wrapped) model; the batch is on the device.
``step_metrics(data)``      extra metrics of a step's data (rollout reward, pass rate, …).
``data_state()`` / ``load_data_state(state)``  the data position, saved in checkpoints (default:
                            epoch and micro-batch index of the offline iterator).
``evaluate()``              a dict of eval metrics (default: greedy pass rate on ``self.env`` when
                            there is one, with samples written to ``samples.jsonl``).

Useful attributes: ``self.config``, ``self.accelerator``, ``self.model`` (prepared),
``self.unwrapped_model``, ``self.tokenizer``, ``self.ref``, ``self.env``, ``self.optimizer``,
``self.scheduler``, ``self.global_step``, ``self.logger`` (:class:`MetricsLogger`), ``self.device``.

``train()`` returns a dict: final metrics, ``output_dir``, ``model_dir`` (the exported model that the
next stage loads), ``steps``, ``stopped_early`` and the eval history.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import TrainConfig
from .distributed import (collective_guard, describe, make_accelerator, mean_over_ranks, prepare_reference,
                          refuse_unsupported)
from .metrics_log import MetricsLogger, resolve_trackers, tracker_dir
from .modeling import apply_lora, compute_dtype, enable_gradient_checkpointing, load_model, make_reference


#: device types torch's fused AdamW kernel runs on (``fused_adamw: None`` uses it there)
FUSED_ADAMW_DEVICES = ("cpu", "cuda", "xpu", "mps")


def _mixed_precision(setting: str) -> Optional[str]:
    if setting != "auto":
        return setting
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # `accelerate launch --mixed_precision ...` decides
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if hasattr(obj, "to") and not isinstance(obj, torch.nn.Module):
        return obj.to(device)
    return obj


class BaseTrainer:
    """Shared loop; see the module docstring for the hooks a subclass overrides.

    Args:
        model: a model object, a local folder, a hub id or ``preset:tiny``.
        config: the trainer's config (``config_class``); defaults when None.
        tokenizer: the tokenizer (loaded with the model when None).
        env: an :class:`rlenv.Env` (or env id) — the task source of online trainers and the
            pass-rate evaluation of all.
    """

    config_class = TrainConfig
    model_kind = "causal_lm"

    def __init__(self, model: Any, config: Optional[TrainConfig] = None, *, tokenizer: Any = None,
                 env: Any = None):
        model_arg = model
        from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed

        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got "
                            f"{type(config).__name__}; build one with {self.config_class.__name__}(...)")
        self.config = config
        if isinstance(env, str):
            import rlenv

            env = rlenv.make(env)
        self.env = env
        # the launcher's parallelism (DDP / FSDP2 / ZeRO), checked: a sharding config that accelerate
        # would silently run as something else stops here (trainers.distributed)
        self.accelerator = make_accelerator(
            mixed_precision=_mixed_precision(config.mixed_precision),
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False),
            step_scheduler_with_optimizer=False, log_with=resolve_trackers(config.report_to) or None,
            project_config=ProjectConfiguration(logging_dir=str(tracker_dir(config.output_dir))))
        self.distributed = describe(self.accelerator)
        self._phase = "setup"
        self.device = self.accelerator.device
        set_seed(config.seed)
        model, self.tokenizer = load_model(model, kind=self.model_kind, dtype=config.model_dtype,
                                           tokenizer=tokenizer)
        if config.lora is not None and not hasattr(model, "peft_config"):
            model = apply_lora(model, config.lora, self.model_kind, model_dtype=config.model_dtype)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = model
        # a policy given as a path gets a reference loaded from that path (built like the policy,
        # e.g. partitioned at load under ZeRO-3), sharded like it in _prepare
        self.ref = make_reference(model, needed=self.needs_reference(), source=model_arg,
                                  kind=self.model_kind, dtype=config.model_dtype, tokenizer=self.tokenizer,
                                  store_dtype=compute_dtype(self.accelerator.mixed_precision))
        self.extra_modules: dict = {}
        self._module_lr: dict = {}  # extra module name -> its own learning rate
        self.train_rows: list = []
        self.global_step = 0
        self.epoch = 0
        self.micro_index = 0
        self.eval_history: list = []
        self._prepared = False
        self._stop = threading.Event()
        self.setup()

    # -- hooks (see module docstring) ---------------------------------------------------------
    def needs_reference(self) -> bool:
        return False

    def setup(self) -> None:
        pass

    def num_examples(self) -> int:
        return len(self.train_rows)

    def collate(self, rows: list) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must implement collate(rows) or next_step_data()")

    def compute_loss(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(model, batch)")

    def micro_batches(self, data: Any) -> list:
        return list(data)

    def updates_per_step(self) -> int:
        return 1

    def step_metrics(self, data: Any) -> dict:
        return {}

    def data_state(self) -> dict:
        return {"epoch": self.epoch, "micro_index": self.micro_index}

    def load_data_state(self, state: dict) -> None:
        self.epoch, self.micro_index = int(state["epoch"]), int(state["micro_index"])

    def evaluate(self) -> dict:
        if self.env is None or self.config.eval_num_tasks == 0:
            return {}
        from rlenv.evaluation import evaluate_pass_rate

        c = self.config
        return evaluate_pass_rate(self.unwrapped_model, self.tokenizer, self.env, num_tasks=c.eval_num_tasks,
                                  max_new_tokens=c.eval_max_new_tokens, batch_size=c.per_device_eval_batch_size,
                                  samples_path=Path(c.output_dir) / "samples.jsonl", step=self.global_step)

    # -- helpers for subclasses ----------------------------------------------------------------
    def add_module(self, name: str, module: torch.nn.Module, learning_rate: Optional[float] = None) -> None:
        """Register an extra trained module (prepared, optimized and checkpointed with the model).
        ``learning_rate`` gives it its own peak learning rate (default: the config's). Call from
        :meth:`setup`."""
        if self._prepared:
            raise RuntimeError("add_module() must be called from setup(), before training starts")
        self.extra_modules[name] = module
        if learning_rate is not None:
            self._module_lr[name] = float(learning_rate)

    @property
    def unwrapped_model(self) -> Any:
        """The model without its distribution wrapper (for generation, saving)."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches of the offline data set per epoch on each process (the last partial one
        is dropped so every process sees the same number)."""
        world = self.config.per_device_train_batch_size * self.accelerator.num_processes
        n = self.num_examples() // world
        if n < 1:
            raise ValueError(f"the training data has {self.num_examples()} rows, fewer than one batch of "
                             f"{world} (per_device_train_batch_size × processes); lower "
                             f"per_device_train_batch_size or add data")
        return n

    def total_steps(self) -> int:
        """``max_steps``, or the steps of ``num_epochs`` epochs when ``max_steps == -1``."""
        c = self.config
        if c.max_steps > 0:
            return c.max_steps
        micro = self.micro_batches_per_epoch * c.num_epochs
        return max(1, math.ceil(micro / c.gradient_accumulation_steps))

    def next_step_data(self) -> list:
        """Default (offline): the next ``gradient_accumulation_steps`` micro-batches of this
        process's shard, in an order reshuffled each epoch from ``seed + epoch``."""
        c = self.config
        bs, world, rank = c.per_device_train_batch_size, self.accelerator.num_processes, self.accelerator.process_index
        out = []
        for _ in range(c.gradient_accumulation_steps):
            if self.micro_index >= self.micro_batches_per_epoch:
                self.epoch, self.micro_index = self.epoch + 1, 0
            g = torch.Generator().manual_seed(c.seed + self.epoch)
            order = torch.randperm(self.num_examples(), generator=g).tolist()
            start = (self.micro_index * world + rank) * bs
            out.append(self.collate([self.train_rows[i] for i in order[start:start + bs]]))
            self.micro_index += 1
        return out

    # -- setup ---------------------------------------------------------------------------------
    def _build_optimizer(self) -> None:
        from transformers import get_scheduler

        c = self.config
        groups: dict = {}  # (learning rate, decayed?) -> params
        modules = [(None, self.model)] + list(self.extra_modules.items())
        for name, m in modules:
            lr = self._module_lr.get(name, c.learning_rate)
            for p in m.parameters():
                if p.requires_grad:
                    # biases and norms are not decayed (the usual AdamW practice)
                    groups.setdefault((lr, p.dim() >= 2), []).append(p)
        if not groups:
            raise ValueError("the model has no trainable parameters")
        param_groups = [{"params": ps, "lr": lr, "weight_decay": c.weight_decay if decayed else 0.0}
                        for (lr, decayed), ps in groups.items()]
        self.optimizer = self._adamw(param_groups)
        self._total = self.total_steps()
        self.scheduler = get_scheduler(c.lr_scheduler, self.optimizer, num_warmup_steps=c.warmup_steps,
                                       num_training_steps=self._total * self.updates_per_step())

    def _adamw(self, param_groups: list) -> torch.optim.Optimizer:
        """AdamW with the kernel ``config.fused_adamw`` asks for (None: fused where the device
        supports it). Fused and per-tensor kernels round differently (last bits of each update),
        so a run's numbers depend on the choice, never its behaviour."""
        c = self.config
        hyper = dict(lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_epsilon)
        want = c.fused_adamw
        if want is None:
            want = self.device.type in FUSED_ADAMW_DEVICES
        if want:
            try:
                return torch.optim.AdamW(param_groups, fused=True, **hyper)
            except (RuntimeError, ValueError) as e:  # a dtype or device the fused kernel lacks
                if c.fused_adamw:
                    raise ValueError(f"fused_adamw=True, but torch's fused AdamW cannot take this model's "
                                     f"parameters on {self.device} ({e}); set fused_adamw to false, or leave "
                                     f"it unset to use the fused kernel only where it works") from e
        return torch.optim.AdamW(param_groups, **hyper)  # torch's default kernel

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._build_optimizer()
        acc = self.accelerator
        ds = getattr(acc.state, "deepspeed_plugin", None)
        if ds is not None:
            # no dataloader goes through prepare(), so DeepSpeed learns the micro-batch size here
            cfg = ds.deepspeed_config
            if cfg.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                cfg["train_micro_batch_size_per_gpu"] = self.config.per_device_train_batch_size
            if cfg.get("gradient_clipping", "auto") == "auto":
                cfg["gradient_clipping"] = self.config.max_grad_norm
        refuse_unsupported(acc, extra_modules=self.extra_modules, trainer=type(self).__name__)
        names = list(self.extra_modules)
        prepared = acc.prepare(self.model, *self.extra_modules.values(), self.optimizer)
        self.model, self.optimizer = prepared[0], prepared[-1]
        self.extra_modules = dict(zip(names, prepared[1:-1]))
        prepare_reference(self.ref, acc)
        if self.distributed["type"] == "fsdp2":
            # one forward through the FSDP root, so its lazy initialisation happens here, on every rank,
            # and not in whichever submodule an engine calls first (FSDP2 then rejects the call)
            from torch.distributed.fsdp import FSDPModule

            with torch.no_grad():
                self.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device))
            for module in self.model.modules():  # units kept unsharded after a forward (the root, the
                if isinstance(module, FSDPModule):  # embedding/head group) would not load a checkpoint
                    module.reshard()
        self._prepared = True

    # -- one step --------------------------------------------------------------------------------
    def training_step(self, data: Any) -> dict:
        """Run the micro-batches of one step's data through accumulate/backward/clip/update."""
        acc, c = self.accelerator, self.config
        micro = self.micro_batches(data)
        if not micro or len(micro) % c.gradient_accumulation_steps:
            raise ValueError(f"a step produced {len(micro)} micro-batches; it must be a positive multiple of "
                             f"gradient_accumulation_steps={c.gradient_accumulation_steps}")
        # accelerate's GradientState is a process-wide singleton: another trainer built later (the
        # next stage of a pipeline) may have changed it, so state ours before accumulating
        acc.gradient_accumulation_steps = c.gradient_accumulation_steps
        acc.step = 0
        sums: dict = {}
        counts: dict = {}
        grad_norms = []
        self.model.train()
        for mb in micro:
            # a placeholder (a micro-batch this rank has no rows for) still runs the forward and
            # backward, so this rank joins the gradient all-reduce (DDP) and the parameter gathers
            # (FSDP2, ZeRO-3) of the others; its loss is multiplied by 0 and it reports no metrics
            placeholder = isinstance(mb, dict) and bool(mb.get("placeholder"))
            mb = _to_device(mb, self.device)
            with acc.accumulate(self.model, *self.extra_modules.values()):
                loss, metrics = self.compute_loss(self.model, mb)
                if placeholder:
                    loss, metrics = loss * 0.0, {}
                acc.backward(loss)
                if acc.sync_gradients:
                    if c.max_grad_norm > 0:
                        # in module order: accelerate's FSDP branch compares this list with the
                        # model's own (list ==), which breaks on the optimizer's grouped order
                        params = [p for m in (self.model, *self.extra_modules.values())
                                  for p in m.parameters() if p.requires_grad]
                        norm = acc.clip_grad_norm_(params, c.max_grad_norm)
                        if norm is not None:
                            grad_norms.append(float(norm))
                self.optimizer.step()
                if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            if placeholder:
                continue
            metrics = dict(metrics, loss=loss.detach())
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
        # each metric is the mean over the micro-batches that reported it (an empty micro-batch,
        # e.g. online DPO with fewer pairs than accumulation steps, reports none)
        out = {k: v / counts[k] for k, v in sums.items()}
        if grad_norms:
            out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        return out

    def _reduce_metrics(self, metrics: dict) -> dict:
        """Average each metric over the processes that reported it (see :func:`mean_over_ranks`)."""
        return mean_over_ranks(self.accelerator, metrics)

    def _should_stop(self) -> bool:
        flag = float(self._stop.is_set())
        if self.accelerator.num_processes > 1:  # every process stops at the same step
            flag = float(self.accelerator.reduce(torch.tensor([flag], device=self.device), reduction="max").item())
        return flag > 0

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.config.output_dir) / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<global_step>`` (all processes must call it)."""
        state = {"global_step": self.global_step, "data": self.data_state(), "eval_history": self.eval_history,
                 "trainer": type(self).__name__}
        return save_checkpoint(self.checkpoints_dir, self.global_step, accelerator=self.accelerator,
                               model=self.model, tokenizer=self.tokenizer, optimizer=self.optimizer,
                               scheduler=self.scheduler, trainer_state=state, extra_modules=self.extra_modules,
                               save_total_limit=self.config.save_total_limit)

    def _resume(self) -> Optional[Path]:
        path = resolve_resume(self.config.resume_from_checkpoint, self.checkpoints_dir)
        if path is None:
            return None
        kernels = [(g.get("fused"), g.get("foreach")) for g in self.optimizer.param_groups]
        state = load_checkpoint(path, accelerator=self.accelerator, model=self.model, optimizer=self.optimizer,
                                scheduler=self.scheduler, extra_modules=self.extra_modules)
        # the checkpoint's param groups carry the kernel flags of the run that saved it; the kernel is
        # this run's choice (fused_adamw), not state
        for g, (fused, foreach) in zip(self.optimizer.param_groups, kernels):
            g["fused"], g["foreach"] = fused, foreach
        self.global_step = int(state["global_step"])
        self.load_data_state(state.get("data", {}))
        self.eval_history = list(state.get("eval_history", []))
        return path

    def save_model(self, folder: Optional[str | os.PathLike] = None) -> Path:
        """Export the trained model with ``save_pretrained`` (+ tokenizer) for the next stage or for
        serving. Under LoRA the adapter is merged into a copy of the base (the adapter alone goes
        to ``adapter/``). Returns the folder."""
        from rlenv.engines.full_weights import adapter_state_dict, full_state_dict

        folder = Path(folder or Path(self.config.output_dir) / "model")
        acc = self.accelerator
        model = self.unwrapped_model
        is_peft = hasattr(model, "peft_config")
        # gathered block by block on every rank (FSDP2 / ZeRO-3), kept by the main process; LoRA is
        # merged beside the base weights — the trained model itself is never modified
        state_dict = full_state_dict(self.model, keep=acc.is_main_process)
        adapter = adapter_state_dict(self.model, keep=acc.is_main_process) if is_peft else None
        if acc.is_main_process:
            tmp = folder.with_name(folder.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            if is_peft:
                model.save_pretrained(tmp / "adapter", state_dict=adapter, safe_serialization=True)
                model.get_base_model().save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            else:
                model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            # swap by renames: at every instant either the old export or the new one is whole
            old = folder.with_name(folder.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return folder

    # -- the loop ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self):
        """SIGINT/SIGTERM ask for a graceful stop; a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step (as SIGTERM does)."""
        self._stop.set()

    def _evaluate(self) -> dict:
        from rlenv.engines.full_weights import gathered

        if type(self).evaluate is BaseTrainer.evaluate and (self.env is None or self.config.eval_num_tasks == 0):
            return {}
        metrics = {}
        # the main process evaluates alone: under FSDP2 / ZeRO-3 every rank gathers the weights once
        # first, so its forwards need nobody else (they would otherwise wait for the idle ranks)
        with gathered(self.model):
            if self.accelerator.is_main_process:
                metrics = {f"eval/{k}" if not k.startswith("eval/") else k: v for k, v in self.evaluate().items()}
            self.accelerator.wait_for_everyone()
        if metrics:
            self.eval_history.append(dict(metrics, step=self.global_step))
            self.logger.log(self.global_step, metrics)
        return metrics

    def train(self) -> dict:
        """Run to ``max_steps`` (or until SIGINT/SIGTERM/``request_stop``); returns a summary dict."""
        from tqdm.auto import tqdm

        c, acc = self.config, self.accelerator
        Path(c.output_dir).mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._prepare()
        resumed = self._resume()
        self.logger = MetricsLogger(c.output_dir, acc, enabled=acc.is_main_process,
                                    resume_step=self.global_step if resumed else None, project=c.project,
                                    config=c.model_dump())
        total = self._total
        bar = tqdm(total=total, initial=self.global_step, desc=type(self).__name__, dynamic_ncols=True,
                   disable=not (c.progress_bar and acc.is_main_process))
        start = time.perf_counter()
        last: dict = {}
        stopped = False
        last_saved = self.global_step if resumed else -1
        d = self.distributed
        if acc.is_main_process:  # the run log says which parallelism actually runs
            print(f"rlenv: {type(self).__name__} distributed={d['type']} world_size={d['world_size']} "
                  f"backend={d['backend']}", flush=True)
        with self._signals(), collective_guard(acc, self._where):
            if self.global_step == 0:
                self._phase = "evaluation"
                self._evaluate()
            while self.global_step < total:
                t0 = time.perf_counter()
                self._phase = "rollout / step data"
                data = self.next_step_data()
                metrics = dict(self.step_metrics(data))
                self._phase = "training step"
                metrics.update(self.training_step(data))
                metrics["lr"] = self.scheduler.get_last_lr()[0]
                metrics["step_time_s"] = time.perf_counter() - t0
                self._phase = "metrics reduction"
                metrics = self._reduce_metrics(metrics)
                self.global_step += 1
                bar.update(1)
                if self.global_step % c.logging_steps == 0 or self.global_step == total:
                    last = self.logger.log(self.global_step, metrics)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()
                                     if k in ("loss", "reward", "pass_rate", "accuracy")})
                if c.eval_every and self.global_step % c.eval_every == 0 and self.global_step < total:
                    self._phase = "evaluation"
                    self._evaluate()
                self._phase = "stop check / checkpoint"
                stopped = self._should_stop()
                if (c.save_steps and self.global_step % c.save_steps == 0) or stopped:
                    self.save_checkpoint()
                    last_saved = self.global_step
                if stopped:
                    break
            bar.close()
            if not stopped:
                self._phase = "final evaluation"
                final_eval = self._evaluate()
                last = dict(last, **final_eval)
                if c.save_steps and last_saved != self.global_step:
                    self.save_checkpoint()
            self._phase = "model export"
            model_dir = self.save_model()
        self.logger.plot(title=type(self).__name__)
        self.logger.close()
        return {"output_dir": c.output_dir, "model_dir": str(model_dir), "steps": self.global_step,
                "stopped_early": stopped, "time_s": time.perf_counter() - start, "metrics": last,
                "eval_history": list(self.eval_history), "distributed": dict(d)}

    def _where(self) -> str:
        """Where the loop is, for error messages: the step being made and its phase."""
        done = self.global_step
        step = done if self._phase in ("final evaluation", "model export") else done + 1
        return f"step {step} ({self._phase})"

"""Config models of the trainers: one shared :class:`TrainConfig` and one small subclass per
algorithm holding only what that algorithm needs.

They are pydantic models built like dataclasses, with keyword arguments; unknown keys are refused
and every check names the field at fault::

    GRPOConfig(output_dir="runs/grpo", max_steps=5, learning_rate=3e-5)
    GRPOConfig(learning_rate=-1)
    # ConfigError: GRPOConfig.learning_rate must be > 0, got -1

Parts are defined once and shared with run specs (a spec's sections *are* these models):
:class:`LoggingConfig` (a spec's ``logging``), :class:`LoraConfig` (``model.lora``), and the
sampling and engine settings of :mod:`rlenv.engines.config` (``engine``, ``engine.sampling``).

Names chosen from a registry — ``advantage_estimator``, ``policy_loss``, ``kl_estimator``,
``loss_agg``, ``loss_type`` — are checked against that registry when the config is built, so a name
you registered yourself is as valid as a built-in one; the ``*_kwargs`` dicts hold the options of
the function chosen (its keyword-only parameters, see :mod:`trainers.registry`).

Defaults are meant to work on a real model; the tiny CPU tests raise the learning rate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, field_validator

from rlenv.config import Config, FieldError, unknown_key
from rlenv.engines.config import EngineConfig, SamplingConfig

__all__ = ["ModelDtype", "MixedPrecision", "LoggingConfig", "LoraConfig", "OptionalLora", "TrainConfig",
           "OfflineConfig", "SFTConfig", "RewardConfig", "DPOLossConfig", "DPOConfig", "RolloutConfig",
           "GRPOConfig", "PPOConfig", "OnlineDPOConfig", "SamplingConfig", "EngineConfig"]

#: the weights' dtype when loading; ``auto``: bf16 on CUDA, float32 on CPU
ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]
#: accelerate's mixed precision; ``auto``: bf16 on a CUDA device that supports it, else no
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


def _refuse_unread(config: Config, fields: tuple, registry: Any, name: str, field_of_name: str) -> None:
    """Config fields that are options of the function chosen from ``registry``: set to a non-default
    value while the chosen function ``name`` has no such option, they would be ignored — refuse."""
    from .registry import option_names

    takes = option_names(registry.get(name))
    for f in fields:
        if f in config.model_fields_set and f not in takes and getattr(config, f) != type(config).model_fields[f].default:
            raise FieldError(f, f": the {registry.kind} `{name}` ({field_of_name}) does not use {f}; leave it unset "
                                f"or pick a {registry.kind} that takes it")


def _check_options(config: Config, field: str, registry: Any, name: str) -> None:
    """``config.<field>`` (a ``*_kwargs`` dict) holds only options of the function ``name`` chosen,
    and none that the config has as a field of its own (two places for one value)."""
    from .registry import check_options

    for key in getattr(config, field):
        if key in type(config).model_fields:
            raise FieldError(field, f": `{key}` is a setting of {type(config).__name__} itself; set {key} there "
                                    f"(the {registry.kind} receives it by name), not in {field}")
    try:
        check_options(registry.get(name), getattr(config, field), registry.kind, name)
    except ValueError as e:
        raise FieldError(field, f": {e}") from None


def _default_report_to() -> list[str]:
    from accelerate.utils import is_tensorboard_available

    return ["tensorboard"] if is_tensorboard_available() else []


class LoggingConfig(Config):
    """Where metrics go: ``<output_dir>/metrics.jsonl`` always, and the trackers of ``report_to``
    through accelerate's tracking API — what a TRL user passes: ``tensorboard``, ``wandb``,
    ``trackio``, ``mlflow``, … (any tracker accelerate knows, including ones registered with
    ``accelerate.tracking.register_tracker_class``), a list of them, ``all`` (every one installed)
    or ``none``; default: ``tensorboard`` when it is installed. ``project`` names the trackers'
    project; the run is named after the output folder."""

    report_to: list[str] = Field(default_factory=_default_report_to)
    logging_steps: int = 1
    project: str = "rlenv"

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if v is None or v == "none":
            return []
        return [v] if isinstance(v, str) else v

    def check(self) -> None:
        super().check()
        self._positive("logging_steps")
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS  # accelerate's table of trackers is the one list

        known = [*LOGGER_TYPE_TO_CLASS, "all"]
        for name in self.report_to:
            if name not in known:
                raise FieldError("report_to", f": {unknown_key(name, known + ['none'], 'unknown tracker')}")
        if not self.project:
            self._fail("project", "a non-empty name", self.project)


class LoraConfig(Config):
    """LoRA adapters (peft) on ``target_modules``; ``None`` in a config's ``lora`` (the default) is
    full fine-tuning, and ``lora: true`` takes these defaults."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: Union[str, list[str]] = "all-linear"

    def check(self) -> None:
        super().check()
        self._positive("r", "alpha")
        self._in_range("dropout", 0.0, 1.0, hi_open=True)


def _lora_shorthand(v: Any) -> Any:
    return {} if v is True else (None if v is False else v)


#: ``lora`` of a config or spec: None (full fine-tuning), a :class:`LoraConfig`, or true/false
OptionalLora = Annotated[Optional[LoraConfig], BeforeValidator(_lora_shorthand)]


class TrainConfig(LoggingConfig):
    """Settings every trainer shares (the loop in :mod:`trainers.loop` reads them).

    A *step* is one optimizer update: ``gradient_accumulation_steps`` micro-batches of
    ``per_device_train_batch_size`` rows on each process. ``max_steps`` counts those steps (for the
    offline trainers ``-1`` means "run ``num_epochs`` epochs").
    """

    output_dir: str = "outputs/run"
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant_with_warmup"  # any name transformers.get_scheduler knows
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_accumulation_steps: int = 1
    max_steps: int = 100
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 32
    mixed_precision: MixedPrecision = "auto"
    model_dtype: ModelDtype = "auto"  # auto: float32 on CPU; on CUDA float32 trained weights (bf16 autocast), bf16 frozen ones
    gradient_checkpointing: bool = False
    seed: int = 0
    # AdamW's fused kernel (one kernel per update instead of ~8 small ops per tensor; CPU update
    # 5.9 -> 1.4 ms on the tiny model): None = where the device supports it, True = required, False = off
    fused_adamw: Optional[bool] = None
    # AdamW's hyperparameters (TRL / transformers names and defaults)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    save_steps: int = 0  # 0: save only at the end (and on SIGINT/SIGTERM)
    save_total_limit: Optional[int] = 2
    resume_from_checkpoint: Optional[str] = None  # None | "latest" | path of a checkpoint dir
    progress_bar: bool = True
    # evaluation of the verifier's pass rate on an env (greedy), when the trainer has an env
    eval_every: int = 0  # steps between evaluations; 0: only before and after training
    eval_num_tasks: int = 64  # 0: no pass-rate evaluation
    eval_max_new_tokens: int = 64
    lora: OptionalLora = None

    def check(self) -> None:
        super().check()
        self._positive("learning_rate", "gradient_accumulation_steps", "per_device_train_batch_size",
                       "per_device_eval_batch_size", "eval_max_new_tokens")
        self._positive("adam_epsilon")
        self._in_range("adam_beta1", 0.0, 1.0, hi_open=True)
        self._in_range("adam_beta2", 0.0, 1.0, hi_open=True)
        self._non_negative("warmup_steps", "weight_decay", "max_grad_norm", "save_steps", "eval_every",
                           "eval_num_tasks")
        from transformers import SchedulerType  # transformers' list of schedules is the one list

        self._one_of("lr_scheduler", [s.value for s in SchedulerType])
        epochs = "num_epochs" in type(self).model_fields
        if self.max_steps < 1 and not (epochs and self.max_steps == -1):
            self._fail("max_steps", "a positive int (or -1: run num_epochs epochs)" if epochs else
                       "a positive int for this trainer (it has no epochs)", self.max_steps)
        if self.save_total_limit is not None and self.save_total_limit < 1:
            self._fail("save_total_limit", "None or >= 1", self.save_total_limit)
        if not self.output_dir:
            self._fail("output_dir", "a non-empty path", self.output_dir)


class OfflineConfig(TrainConfig):
    """What the trainers on a fixed data set share: epochs and a length limit."""

    learning_rate: float = 2e-5
    lr_scheduler: str = "linear"
    max_steps: int = -1
    num_epochs: float = 1.0
    max_length: int = 1024  # longer examples are truncated (from the right)

    def check(self) -> None:
        super().check()
        self._positive("num_epochs", "max_length")
        if "num_epochs" in self.model_fields_set and self.max_steps != -1:  # it would be ignored
            self._fail("num_epochs", f"left unset when max_steps is set ({self.max_steps}); set max_steps to -1 "
                       "to train by epochs", self.num_epochs)


class SFTConfig(OfflineConfig):
    """Supervised fine-tuning: cross-entropy on completion (assistant) tokens only."""

    packing: bool = False  # concatenate examples into max_length rows (attention still per example)
    completion_only_loss: bool = True  # False: loss on every token, prompt included


class RewardConfig(OfflineConfig):
    """Reward-model training: a 1-output sequence-classification head, Bradley–Terry loss on pairs
    (with the data set's ``margin`` column when present). Its evaluation is the pairwise accuracy on
    (at most ``eval_num_tasks``) held-apart pairs."""

    learning_rate: float = 1e-5
    center_rewards_coefficient: float = 0.0  # > 0 adds coef * mean(r^2) to keep rewards centred

    def check(self) -> None:
        super().check()
        self._non_negative("center_rewards_coefficient")


class DPOLossConfig(Config):
    """The DPO loss settings offline and online DPO share: ``loss_type`` names a registered DPO loss
    (:data:`trainers.losses_pref.DPO_LOSSES`), ``loss_kwargs`` its own options."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0  # conservative/robust DPO's assumed label-noise rate
    loss_kwargs: dict[str, Any] = Field(default_factory=dict)

    def check(self) -> None:
        super().check()
        from .losses_pref import DPO_LOSSES

        self._positive("beta")
        self._in_range("label_smoothing", 0.0, 0.5)
        self._registered("loss_type", DPO_LOSSES)
        _check_options(self, "loss_kwargs", DPO_LOSSES, self.loss_type)
        _refuse_unread(self, ("label_smoothing",), DPO_LOSSES, self.loss_type, "loss_type")


class DPOConfig(OfflineConfig, DPOLossConfig):
    """Offline DPO on chosen/rejected pairs."""

    learning_rate: float = 1e-6
    precompute_ref_logprobs: bool = False  # score the data set with the reference once, then free it
    sft_weight: float = 0.0  # + weight · NLL of the chosen tokens (RPO; TRL's loss_type "sft")

    def check(self) -> None:
        super().check()
        self._non_negative("sft_weight")


class RolloutConfig(TrainConfig, SamplingConfig):
    """What the online trainers (GRPO, PPO, online DPO) share: the sampling settings (inherited from
    :class:`~rlenv.engines.config.SamplingConfig`), the engine and the rollout's size."""

    max_steps: int = 200
    lr_scheduler: str = "constant"
    num_prompts_per_step: int = 8
    group_size: int = 8  # completions sampled per prompt
    engine: EngineConfig = Field(default_factory=EngineConfig)
    mini_batch_size: Optional[int] = None  # rows per optimizer update; None: the whole rollout

    def check(self) -> None:
        super().check()
        self._positive("num_prompts_per_step", "group_size")
        if self.mini_batch_size is not None:
            self._positive("mini_batch_size")
        self._not_set("per_device_train_batch_size", "an online trainer's rows per step are num_prompts_per_step × "
                      "group_size, split by mini_batch_size and gradient_accumulation_steps")
        if self.engine.name == "openai":
            raise FieldError("engine.name", ": `openai` can only serve eval; an online trainer samples from its "
                                            "own policy with `hf` or `vllm`")


class GRPOConfig(RolloutConfig):
    """GRPO and its variants (Dr. GRPO, DAPO, RLOO, REINFORCE++, GSPO, CISPO) chosen by name."""

    learning_rate: float = 1e-6
    num_iterations: int = 1  # μ: optimisation passes over each rollout batch
    beta: float = 0.0  # KL coefficient in the loss; 0: no reference model is kept
    kl_estimator: str = "k3"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.28  # clip-higher (DAPO)
    advantage_estimator: str = "grpo"
    advantage_kwargs: dict[str, Any] = Field(default_factory=dict)
    policy_loss: str = "clip"
    policy_loss_kwargs: dict[str, Any] = Field(default_factory=dict)
    loss_agg: str = "token-mean"
    mask_truncated: bool = False  # drop completions cut by max_new_tokens from the loss
    overlong_buffer: int = 0  # soft overlong punishment (DAPO): last N tokens before the limit; 0 off
    overlong_penalty: float = 1.0  # penalty reached at the limit
    dynamic_sampling: bool = False  # drop all-equal-reward groups and refill (DAPO)
    max_resample_rounds: int = 3
    tis: Literal["none", "token", "sequence"] = "none"  # truncated IS for engine/trainer mismatch
    tis_mode: Literal["truncate", "mask"] = "truncate"
    tis_cap: float = 2.0

    def check(self) -> None:
        super().check()
        from .advantages import ADVANTAGES
        from .losses import AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES

        self._positive("num_iterations", "tis_cap")
        self._non_negative("beta", "epsilon_low", "epsilon_high", "overlong_buffer", "overlong_penalty",
                           "max_resample_rounds")
        self._registered("kl_estimator", KL_ESTIMATORS)
        self._registered("advantage_estimator", ADVANTAGES)
        self._registered("policy_loss", POLICY_LOSSES)
        self._registered("loss_agg", AGGREGATIONS)
        _check_options(self, "advantage_kwargs", ADVANTAGES, self.advantage_estimator)
        _check_options(self, "policy_loss_kwargs", POLICY_LOSSES, self.policy_loss)
        _refuse_unread(self, ("epsilon_low", "epsilon_high"), POLICY_LOSSES, self.policy_loss, "policy_loss")
        if self.overlong_buffer >= self.max_new_tokens:
            self._fail("overlong_buffer", f"< max_new_tokens ({self.max_new_tokens})", self.overlong_buffer)
        if self.advantage_estimator == "rloo" and self.group_size < 2:
            self._fail("group_size", ">= 2 for the rloo estimator", self.group_size)


class PPOConfig(RolloutConfig):
    """PPO with a value head, GAE and the KL penalty in the reward."""

    learning_rate: float = 1e-6
    group_size: int = 1
    gamma: float = 1.0
    gae_lambda: float = 0.95
    vf_coef: float = 0.1
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    adaptive_kl: bool = False
    kl_target: float = 6.0  # adaptive controller's target KL (Ziegler et al.)
    kl_horizon: int = 10000
    reward_model: Optional[str] = None  # path of a trained reward model (adds its score to the reward)
    reward_model_weight: float = 1.0
    ppo_epochs: int = 4
    value_learning_rate: Optional[float] = None  # None: same as learning_rate

    def check(self) -> None:
        super().check()
        from .losses import KL_ESTIMATORS

        self._in_range("gamma", 0.0, 1.0)
        self._in_range("gae_lambda", 0.0, 1.0)
        self._non_negative("vf_coef", "kl_coef", "reward_model_weight")
        self._positive("cliprange", "cliprange_value", "kl_target", "kl_horizon", "ppo_epochs")
        self._registered("kl_estimator", KL_ESTIMATORS)
        if self.value_learning_rate is not None:
            self._positive("value_learning_rate")


class OnlineDPOConfig(RolloutConfig, DPOLossConfig):
    """Online DPO: sample ``group_size`` (≥ 2) completions per prompt, rank them, train on the best
    vs the worst, on-policy each step."""

    learning_rate: float = 5e-7
    group_size: int = 2
    rank_by: Literal["verifier", "reward_model"] = "verifier"
    reward_model: Optional[str] = None  # needed by rank_by='reward_model' (in a spec, an rm stage before fills it)

    def check(self) -> None:
        super().check()
        if self.group_size < 2:
            self._fail("group_size", ">= 2 (a pair per prompt)", self.group_size)
        self._not_set("mini_batch_size", "online DPO makes one optimizer update per step, on all of its pairs")

"""Config dataclasses of the trainers: one shared :class:`TrainConfig` and one small subclass per
algorithm holding only what that algorithm needs.

They are plain dataclasses with type hints (the spec loader validates a stage's settings against
them with pydantic, unknown keys forbidden) and check their values in ``__post_init__``, so a bad
value fails at construction with a message naming the field::

    GRPOConfig(learning_rate=-1)
    # ValueError: GRPOConfig.learning_rate must be > 0, got -1

Defaults are meant to work on a real model; the tiny CPU tests raise the learning rate.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                 "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
KL_ESTIMATORS = ("k1", "k2", "k3")
ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp")
POLICY_LOSSES = ("clip", "gspo", "cispo")
LOSS_AGGREGATIONS = ("token-mean", "seq-mean", "constant")
TIS_LEVELS = ("none", "token", "sequence")
TIS_MODES = ("truncate", "mask")
RANK_BY = ("verifier", "reward_model")


class _Checks:
    """Tiny validation helpers; every error names ``<Class>.<field>`` and the value at fault."""

    def _fail(self, field: str, rule: str, value) -> None:
        raise ValueError(f"{type(self).__name__}.{field} must be {rule}, got {value!r}")

    def _positive(self, *fields: str) -> None:
        for f in fields:
            v = getattr(self, f)
            if v is None or isinstance(v, bool) or not v > 0:
                self._fail(f, "> 0", v)

    def _non_negative(self, *fields: str) -> None:
        for f in fields:
            v = getattr(self, f)
            if v is None or isinstance(v, bool) or not v >= 0:
                self._fail(f, ">= 0", v)

    def _one_of(self, field: str, choices) -> None:
        v = getattr(self, field)
        if v not in choices:
            self._fail(field, f"one of {list(choices)}", v)

    def _in_range(self, field: str, lo: float, hi: float, lo_open: bool = False) -> None:
        v = getattr(self, field)
        ok = v is not None and (lo < v if lo_open else lo <= v) and v <= hi
        if not ok:
            self._fail(field, f"in {'(' if lo_open else '['}{lo}, {hi}]", v)


@dataclasses.dataclass
class TrainConfig(_Checks):
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
    mixed_precision: str = "auto"  # auto: bf16 on a CUDA device that supports it, else no
    model_dtype: str = "float32"  # weights' dtype when loading; auto: bf16 on CUDA, float32 on CPU
    gradient_checkpointing: bool = False
    seed: int = 0
    # AdamW's fused kernel (one kernel per update instead of ~8 small ops per tensor; CPU update
    # 5.9 -> 1.4 ms on the tiny model): None = where the device supports it, True = required, False = off
    fused_adamw: Optional[bool] = None
    logging_steps: int = 1
    save_steps: int = 0  # 0: save only at the end (and on SIGINT/SIGTERM)
    save_total_limit: Optional[int] = 2
    resume_from_checkpoint: Optional[str] = None  # None | "latest" | path of a checkpoint dir
    report_to: str = "tensorboard"  # "tensorboard" | "none"; metrics.jsonl is always written
    progress_bar: bool = True
    # evaluation of the verifier's pass rate on an env (greedy), when the trainer has an env
    eval_every: int = 0  # steps between evaluations; 0: only before and after training
    eval_num_tasks: int = 64  # 0: no pass-rate evaluation
    eval_max_new_tokens: int = 64
    # LoRA (peft); full fine-tuning when use_lora is False
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: Union[str, list] = "all-linear"

    def __post_init__(self):
        self._positive("learning_rate", "gradient_accumulation_steps", "per_device_train_batch_size",
                       "per_device_eval_batch_size", "logging_steps", "eval_max_new_tokens", "lora_r",
                       "lora_alpha")
        self._non_negative("warmup_steps", "weight_decay", "max_grad_norm", "save_steps", "eval_every",
                           "eval_num_tasks")
        self._one_of("lr_scheduler", LR_SCHEDULERS)
        self._one_of("mixed_precision", MIXED_PRECISION)
        self._one_of("model_dtype", MODEL_DTYPES)
        self._one_of("report_to", ("tensorboard", "none"))
        self._in_range("lora_dropout", 0.0, 1.0)
        if not isinstance(self.max_steps, int) or (self.max_steps < 1 and self.max_steps != -1):
            self._fail("max_steps", "a positive int (or -1: run num_epochs epochs)", self.max_steps)
        if self.max_steps == -1 and not hasattr(self, "num_epochs"):
            self._fail("max_steps", "a positive int for this trainer (it has no epochs)", self.max_steps)
        if self.fused_adamw not in (None, True, False):
            self._fail("fused_adamw", "None (fused where the device supports it), true or false", self.fused_adamw)
        if self.save_total_limit is not None and self.save_total_limit < 1:
            self._fail("save_total_limit", "None or >= 1", self.save_total_limit)
        if not self.output_dir:
            self._fail("output_dir", "a non-empty path", self.output_dir)


@dataclasses.dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning: cross-entropy on completion (assistant) tokens only."""

    learning_rate: float = 2e-5
    lr_scheduler: str = "linear"
    max_steps: int = -1
    num_epochs: float = 1.0
    max_length: int = 1024  # longer examples are truncated (from the right)
    packing: bool = False  # concatenate examples into max_length rows (attention still per example)
    completion_only_loss: bool = True  # False: loss on every token, prompt included

    def __post_init__(self):
        super().__post_init__()
        self._positive("num_epochs", "max_length")


@dataclasses.dataclass
class RewardConfig(TrainConfig):
    """Reward-model training: a 1-output sequence-classification head, Bradley–Terry loss on pairs
    (with the data set's ``margin`` column when present)."""

    learning_rate: float = 1e-5
    lr_scheduler: str = "linear"
    max_steps: int = -1
    num_epochs: float = 1.0
    max_length: int = 1024
    center_rewards_coefficient: float = 0.0  # > 0 adds coef * mean(r^2) to keep rewards centred

    def __post_init__(self):
        super().__post_init__()
        self._positive("num_epochs", "max_length")
        self._non_negative("center_rewards_coefficient")


@dataclasses.dataclass
class DPOConfig(TrainConfig):
    """Offline DPO on chosen/rejected pairs."""

    learning_rate: float = 1e-6
    lr_scheduler: str = "linear"
    max_steps: int = -1
    num_epochs: float = 1.0
    max_length: int = 1024
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge | robust
    label_smoothing: float = 0.0  # robust (cDPO-style) DPO's assumed label-noise rate
    precompute_ref_logprobs: bool = False  # score the data set with the reference once, then free it
    sft_weight: float = 0.0  # + weight · NLL of the chosen tokens (RPO; TRL's loss_type "sft")

    def __post_init__(self):
        super().__post_init__()
        self._positive("num_epochs", "max_length", "beta")
        self._non_negative("sft_weight")
        self._one_of("loss_type", DPO_LOSS_TYPES)
        self._in_range("label_smoothing", 0.0, 0.5)


@dataclasses.dataclass
class RolloutConfig(TrainConfig):
    """Sampling settings shared by the online trainers (GRPO, PPO, online DPO)."""

    max_steps: int = 200
    lr_scheduler: str = "constant"
    num_prompts_per_step: int = 8
    group_size: int = 8  # completions sampled per prompt
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    engine: str = "hf"  # generation engine: hf | vllm
    mini_batch_size: Optional[int] = None  # rows per optimizer update; None: the whole rollout

    def __post_init__(self):
        super().__post_init__()
        self._positive("num_prompts_per_step", "group_size", "max_new_tokens")
        self._non_negative("temperature", "top_k")
        self._in_range("top_p", 0.0, 1.0, lo_open=True)
        self._one_of("engine", ("hf", "vllm"))
        if self.mini_batch_size is not None:
            self._positive("mini_batch_size")


@dataclasses.dataclass
class GRPOConfig(RolloutConfig):
    """GRPO and its variants (Dr. GRPO, DAPO, RLOO, REINFORCE++, GSPO, CISPO) chosen by name."""

    learning_rate: float = 1e-6
    num_iterations: int = 1  # μ: optimisation passes over each rollout batch
    beta: float = 0.0  # KL coefficient in the loss; 0: no reference model is kept
    kl_estimator: str = "k3"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.28  # clip-higher (DAPO)
    advantage_estimator: str = "grpo"
    policy_loss: str = "clip"
    loss_agg: str = "token-mean"
    mask_truncated: bool = False  # drop completions cut by max_new_tokens from the loss
    overlong_buffer: int = 0  # soft overlong punishment (DAPO): last N tokens before the limit; 0 off
    overlong_penalty: float = 1.0  # penalty reached at the limit
    dynamic_sampling: bool = False  # drop all-equal-reward groups and refill (DAPO)
    max_resample_rounds: int = 3
    tis: str = "none"  # truncated importance sampling for engine/trainer mismatch
    tis_mode: str = "truncate"
    tis_cap: float = 2.0

    def __post_init__(self):
        super().__post_init__()
        self._positive("num_iterations", "tis_cap")
        self._non_negative("beta", "epsilon_low", "epsilon_high", "overlong_buffer", "overlong_penalty",
                           "max_resample_rounds")
        self._one_of("kl_estimator", KL_ESTIMATORS)
        self._one_of("advantage_estimator", ADVANTAGE_ESTIMATORS)
        self._one_of("policy_loss", POLICY_LOSSES)
        self._one_of("loss_agg", LOSS_AGGREGATIONS)
        self._one_of("tis", TIS_LEVELS)
        self._one_of("tis_mode", TIS_MODES)
        if self.overlong_buffer >= self.max_new_tokens:
            self._fail("overlong_buffer", f"< max_new_tokens ({self.max_new_tokens})", self.overlong_buffer)
        if self.advantage_estimator == "rloo" and self.group_size < 2:
            self._fail("group_size", ">= 2 for the rloo estimator", self.group_size)


@dataclasses.dataclass
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

    def __post_init__(self):
        super().__post_init__()
        self._in_range("gamma", 0.0, 1.0)
        self._in_range("gae_lambda", 0.0, 1.0)
        self._non_negative("vf_coef", "kl_coef", "reward_model_weight")
        self._positive("cliprange", "cliprange_value", "kl_target", "kl_horizon", "ppo_epochs")
        self._one_of("kl_estimator", KL_ESTIMATORS)
        if self.value_learning_rate is not None:
            self._positive("value_learning_rate")


@dataclasses.dataclass
class OnlineDPOConfig(RolloutConfig):
    """Online DPO: sample ``group_size`` (≥ 2) completions per prompt, rank them, train on the best
    vs the worst, on-policy each step."""

    learning_rate: float = 5e-7
    group_size: int = 2
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rank_by: str = "verifier"  # verifier | reward_model
    reward_model: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        self._positive("beta")
        if self.group_size < 2:
            self._fail("group_size", ">= 2 (a pair per prompt)", self.group_size)
        self._one_of("loss_type", DPO_LOSS_TYPES)
        self._in_range("label_smoothing", 0.0, 0.5)
        self._one_of("rank_by", RANK_BY)
        if self.rank_by == "reward_model" and not self.reward_model:
            self._fail("reward_model", "a path when rank_by='reward_model'", self.reward_model)


CONFIGS = {"sft": SFTConfig, "rm": RewardConfig, "reward": RewardConfig, "dpo": DPOConfig,
           "grpo": GRPOConfig, "ppo": PPOConfig, "online_dpo": OnlineDPOConfig}

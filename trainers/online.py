"""What GRPO, PPO and online DPO share, written once.

- :func:`build_env` — an env id, an :class:`rlenv.Env` or a list of tasks, optionally with verifier
  functions passed directly (TRL's ``reward_funcs``).
- :func:`completion_logprobs` — one forward; log-probs (and entropy) of the completion positions
  only (the LM head runs on ``T - start + 1`` positions, never on the shared prompt prefix).
- :func:`shared_prefix_logprobs` / :func:`policy_logprobs` — the same, with each group's prompt
  forwarded once and its key/value cache shared by the group's G rows.
- :func:`shape_rewards` — rollout → rewards → masks: soft overlong penalty, verifier failures and
  (optionally) truncated completions masked out.
- :func:`micro_batches_by_length` / :func:`gather_rows` — rows of similar length grouped together,
  each micro-batch trimmed to its own longest row (no forward pays for another row's padding).
- :class:`OnlineTrainer` — the base of the three online trainers on the shared loop: the engine,
  seeded prompt draws (same step → same prompts and samples, so resume is exact), reference/old
  log-prob passes and the generation / scoring / training time split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Optional, Sequence

import torch

from .distributed import SHARDED, all_ranks_max
from .loop import BaseTrainer
from .logprobs import forward_token_logprobs


# -- env ----------------------------------------------------------------------------------------------
def build_env(env: Any, verifiers: Optional[Sequence[Any]] = None) -> Any:
    """The env an online trainer samples from.

    ``env``: an env id (``"arithmetic-v0"``), an :class:`rlenv.Env`, or a list of tasks / a
    ``datasets.Dataset`` (then ``verifiers`` is required). ``verifiers``: functions
    ``(completion, task) -> float`` or ``(fn, weight)`` pairs; they replace the env's rubric.
    """
    import rlenv
    from verifiers.rubric import Rubric

    if env is None:
        raise ValueError("an online trainer needs env= (an env id such as 'arithmetic-v0', an Env, or a "
                         "list of tasks together with verifiers=[...])")
    if isinstance(env, str):
        env = rlenv.make(env)
    elif not (hasattr(env, "reset") and hasattr(env, "step")):
        if not verifiers:
            raise ValueError("env= is a list of tasks: also pass verifiers=[fn, ...] to score completions")
        return rlenv.SingleTurnEnv(env, Rubric(list(verifiers)))
    if verifiers:
        if not hasattr(env.unwrapped, "rubric"):
            raise ValueError(f"{env!r} has no rubric to replace; build the env with its verifiers instead")
        env.unwrapped.rubric = Rubric(list(verifiers))
    return env


# -- forward ------------------------------------------------------------------------------------------
def completion_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                        temperature: float = 1.0, with_entropy: bool = False):
    """Log-prob of each token ``input_ids[:, start:]`` under ``model`` → ``[B, T - start]`` float32.

    ``start`` ≥ 1 is the first position that can hold a generated token (the shortest prompt).
    Logits are divided by ``temperature`` so the distribution is the one the engine sampled from.
    Returns ``(logprobs, entropy or None)``. Positions come from the attention mask, so left- and
    right-padded rows score the same. The LM head runs chunked on the completion positions only
    (:mod:`trainers.logprobs`: no ``[tokens, vocab]`` float32 tensor).
    """
    if start < 1:
        raise ValueError(f"completion_logprobs: start must be ≥ 1 (a token needs a prefix), got {start}")
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    keep = input_ids.shape[1] - start + 1
    # the last kept position predicts nothing: score it on any token and drop it
    labels = torch.cat([input_ids[:, start:], input_ids[:, -1:]], 1)
    _, logprobs, entropy = forward_token_logprobs(
        model, labels, temperature=temperature, with_entropy=with_entropy, input_ids=input_ids,
        attention_mask=attention_mask, position_ids=position_ids, use_cache=False, logits_to_keep=keep)
    return logprobs[:, :-1], (entropy[:, :-1] if with_entropy else None)


def shared_prefix_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                           group_ids: torch.Tensor, prompt_lengths: torch.Tensor, temperature: float = 1.0,
                           with_entropy: bool = False):
    """:func:`completion_logprobs` with the prompt run once per group instead of once per row.

    The G rows of a group share their prompt (``input_ids[b, :prompt_lengths[b]]``): the prompts
    are forwarded once (left-padded), their key/value cache is indexed out to the rows (autograd
    sums the rows' gradients into the shared prefix), and only the completions are forwarded on
    top. Same ``[B, T - start]`` layout and values as :func:`completion_logprobs`; rows are
    right-padded ``[prompt][completion][pad]``. Returns None when the rows do not share their
    prefixes by group (the caller falls back to the plain forward).
    """
    plen = prompt_lengths.long()
    uniq, idx = torch.unique(group_ids, return_inverse=True)
    rep = torch.zeros(len(uniq), dtype=torch.long).scatter_(0, idx.cpu(), torch.arange(len(idx)))
    P = int(plen.max())
    ar = torch.arange(P, device=input_ids.device)
    in_prompt = ar[None] < plen[:, None]
    # every row's prompt must equal its group representative's (else no sharing)
    prefix = torch.where(in_prompt, input_ids[:, :P], -1)
    if not torch.equal(prefix, prefix[rep.to(input_ids.device)][idx.to(input_ids.device)]):
        return None
    # prompts left-padded so every one ends at column P - 1 (its last logit predicts token 1)
    rp = plen[rep]
    shift = (P - rp)[:, None]
    src = (ar[None] - shift).clamp(min=0)
    p_mask = (ar[None] >= shift).long()
    p_ids = torch.where(p_mask.bool(), input_ids[rep][:, :P].gather(1, src), 0)
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    # completions (and anything after the prompt), right-padded from column 0
    lengths = attention_mask.long().sum(-1)
    clen = lengths - plen
    C = int(clen.max())
    ac = torch.arange(C, device=input_ids.device)
    c_valid = ac[None] < clen[:, None]
    c_ids = torch.where(c_valid, input_ids.gather(1, (plen[:, None] + ac[None]).clamp(max=input_ids.shape[1] - 1)), 0)
    # the prompt's last position predicts each row's first completion token
    out, lp_first, e_first = forward_token_logprobs(
        model, c_ids[:, :1], temperature=temperature, with_entropy=with_entropy, rows=idx.to(input_ids.device),
        input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    _rows_of_groups(cache, idx.to(input_ids.device))  # [groups] → [rows]; gradients sum back
    mask = torch.cat([p_mask[idx], c_valid.long()], 1)
    c_pos = plen[:, None] + ac[None]
    # completion position j predicts token j + 1 (the last one predicts nothing: scored on any token)
    _, lp_rest, e_rest = forward_token_logprobs(
        model, torch.cat([c_ids[:, 1:], c_ids[:, :1]], 1), temperature=temperature, with_entropy=with_entropy,
        input_ids=c_ids, attention_mask=mask, position_ids=c_pos, past_key_values=cache, use_cache=True,
        logits_to_keep=C)
    lp = torch.cat([lp_first, lp_rest[:, :-1]], 1)  # column j: completion token j ([B, C] floats only)
    # back into completion_logprobs' layout: column (prompt_length - start + j) holds token j
    W = input_ids.shape[1] - start
    rows = torch.arange(len(plen), device=input_ids.device)[:, None].expand(-1, C)[c_valid]
    cols = (plen[:, None] - start + ac[None])[c_valid]
    out_lp = torch.zeros(len(plen), W, dtype=lp.dtype, device=lp.device).index_put((rows, cols), lp[c_valid])
    ent = None
    if with_entropy:
        e = torch.cat([e_first, e_rest[:, :-1]], 1)
        ent = torch.zeros(len(plen), W, dtype=e.dtype, device=e.device).index_put((rows, cols), e[c_valid])
    return out_lp, ent


def _rows_of_groups(cache: Any, idx: torch.Tensor) -> None:
    """Expand a prompt cache from one row per group to one row per sample (``idx``: row → group),
    in place. ``index_select`` rather than ``cache.batch_select_indices``: its backward sums the
    rows' gradients into each group with ``index_add_`` (in row order), where advanced indexing's
    backward (``index_put_`` with accumulate) adds them with atomics across threads on CPU, so two
    same-seed runs with more than one thread drifted apart (~1e-6 in the weights after a few steps)."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        cache.batch_select_indices(idx)  # another cache layout: its own selection
        return
    for layer in layers:
        if layer.keys is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, idx)
            layer.values = layer.values.index_select(0, idx)


def policy_logprobs(model: Any, mb: dict, temperature: float = 1.0, with_entropy: bool = False):
    """The micro-batch's completion log-probs (and entropy): with the prompt shared per group when
    ``mb`` has ``group_ids``/``prompt_lengths`` and some group has several rows (GRPO's G samples),
    else one plain forward. Gradient checkpointing turns the cache off, so it uses the plain one."""
    gids = mb.get("group_ids")
    if (gids is not None and "prompt_lengths" in mb and len(torch.unique(gids)) < len(gids)
            and not getattr(model, "is_gradient_checkpointing", False)):
        out = shared_prefix_logprobs(model, mb["input_ids"], mb["attention_mask"], mb["start"], gids,
                                     mb["prompt_lengths"], temperature, with_entropy)
        if out is not None:
            return out
    return completion_logprobs(model, mb["input_ids"], mb["attention_mask"], mb["start"], temperature,
                               with_entropy=with_entropy)


# -- rewards and masks --------------------------------------------------------------------------------
def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment: 0 up to ``max_new_tokens - buffer`` tokens, then a linear
    ramp down to ``-penalty`` at the limit."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_new_tokens - buffer)).clamp(min=0)
    return -penalty * (over / buffer).clamp(max=1.0)


def shape_rewards(batch: Any, *, max_new_tokens: int, mask_truncated: bool = False, overlong_buffer: int = 0,
                  overlong_penalty_value: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rollout → ``(rewards [B], valid [B] bool)``.

    ``rewards`` = the verifiers' weighted total plus the soft overlong penalty; ``valid`` is False
    for rows a verifier failed on (infrastructure, not a judgement) and, with ``mask_truncated``,
    rows cut by the length limit — those rows leave the group statistics and the loss.
    """
    rewards = batch.rewards.float() + overlong_penalty(batch.completion_lengths, max_new_tokens, overlong_buffer,
                                                       overlong_penalty_value)
    valid = ~batch.failed.bool()
    if mask_truncated:
        valid &= ~batch.truncated.bool()
    return rewards, valid


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: rows whose group's valid rewards are not all equal (DAPO's dynamic-sampling filter)."""
    keep = torch.zeros_like(valid)
    for g in group_ids.unique():
        rows = (group_ids == g) & valid
        r = rewards[rows]
        if r.numel() > 1 and float(r.max() - r.min()) > 1e-6:
            keep |= group_ids == g
    return keep


# -- micro-batches --------------------------------------------------------------------------------------
def micro_batches_by_length(lengths: torch.Tensor, rows: torch.Tensor, n_chunks: int) -> list:
    """Split ``rows`` into ``n_chunks`` index tensors of neighbouring lengths (sorted), so each
    micro-batch's padding is only the spread within it."""
    order = rows[torch.argsort(lengths[rows], stable=True)]
    return [c for c in torch.tensor_split(order, n_chunks)]


def gather_rows(batch: Any, rows: torch.Tensor, per_token: dict, per_row: dict) -> dict:
    """A micro-batch dict of ``rows``: ``input_ids``/``attention_mask`` trimmed to the longest row,
    ``start`` = the shortest prompt, and every ``per_token`` tensor (``[B, T]``, aligned with
    ``input_ids``) cut to the completion window ``[start, end)``."""
    end = int(batch.attention_mask[rows].sum(-1).max())
    start = max(1, int(batch.prompt_lengths[rows].min()))
    mb = {"input_ids": batch.input_ids[rows, :end], "attention_mask": batch.attention_mask[rows, :end],
          "start": start, "rows": rows}
    for k, v in per_token.items():
        mb[k] = v[rows, start:end]
    for k, v in per_row.items():
        mb[k] = v[rows]
    return mb


# -- the base trainer ---------------------------------------------------------------------------------
class OnlineTrainer(BaseTrainer):
    """Base of GRPO, PPO and online DPO: samples from ``self.env`` with the generation engine.

    Args:
        model: a model object, folder, hub id or ``preset:tiny``.
        env: an env id, an :class:`rlenv.Env`, or a list of tasks (with ``verifiers``).
        config: the trainer's config.
        verifiers: reward functions ``(completion, task) -> float`` or ``(fn, weight)`` pairs that
            replace the env's rubric.
        tokenizer: loaded with the model when None.
        engine: a ready :class:`rlenv.engines.Engine`; by default one is built from
            ``config.engine`` (:class:`rlenv.engines.config.EngineConfig`) on the
            policy itself.
        curriculum: an :class:`rlenv.curriculum.Curriculum`; each step's rollout pass rate is fed to
            it and the env is rebuilt at the next level when it says so. ``env`` defaults to
            ``curriculum.make_env()``.
    """

    def __init__(self, model: Any = None, env: Any = None, config: Any = None, *,
                 verifiers: Optional[Sequence[Any]] = None, tokenizer: Any = None, engine: Any = None,
                 curriculum: Any = None):
        self._engine = engine
        self.timing: dict = {}
        self.curriculum = curriculum
        self._rubric_extras: Optional[tuple] = None
        self._verifiers_replaced = bool(verifiers)
        if env is None and curriculum is not None:
            env = curriculum.make_env()
        super().__init__(model, config, tokenizer=tokenizer, env=build_env(env, verifiers))

    # -- generation ------------------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The generation engine (built on first use, on the unwrapped policy)."""
        if self._engine is None:
            self._engine = self.config.engine.build(model=self.unwrapped_model, tokenizer=self.tokenizer)
        return self._engine

    def _seed(self, round_: int = 0) -> int:
        """Seed of a step's prompt draw and sampling: a function of (seed, step, round, process)
        only, so a resumed run draws exactly what the uninterrupted one would have."""
        step = self.global_step * 64 + round_
        return (self.config.seed * 1_000_003 + step * 8192 + self.accelerator.process_index * 1_000_000_007) % 2**62

    def rollout(self, n_prompts: int, round_: int = 0) -> Any:
        """Sample ``group_size`` completions for each of ``n_prompts`` freshly drawn prompts and score
        them with the env's verifiers (a :class:`rlenv.batch.RolloutBatch`)."""
        from rlenv.rollout import collect_rollouts

        c = self.config
        seed = self._seed(round_)
        self._extend_rubric()  # the env may have been rebuilt (curriculum, resume) since the last rollout
        self._sync_engine()
        params = c.sampling_params(seed=seed)
        # one engine call for the whole step: decoding is bound by reading the weights once per
        # token, so 64 rows in one batch cost about what 16 do; the rollout's default of four chunks
        # (to overlap slow verifiers with generation) measured 1.7x slower generation on CPU
        batch = collect_rollouts(self.env, self.engine, n_prompts, group_size=c.group_size, sampling=params,
                                 seed=seed, chunk_groups=n_prompts)
        # the HF engine's decode caches and CUDA graphs give their memory to the scoring and training
        # passes (rebuilt at the next rollout); its health (graph capture failures) is logged with it
        if hasattr(self.engine, "release_memory"):
            self.engine.release_memory()
        if hasattr(self.engine, "metrics"):
            batch.metrics.update(self.engine.metrics())
        if self.curriculum is not None and round_ == 0:  # refill rounds are biased towards hard prompts
            self._observe_curriculum(batch)
        gen = batch.metrics.get("generation_time_s", 0.0)
        self.timing["generation_s"] = self.timing.get("generation_s", 0.0) + gen
        self.timing["scoring_s"] = self.timing.get("scoring_s", 0.0) + max(
            batch.metrics.get("rollout_time_s", 0.0) - gen, 0.0)
        return batch

    def _observe_curriculum(self, batch: Any) -> None:
        """Feed the rollout's pass rate to the curriculum; rebuild the env when the level rises
        (from the next step on: this step's rollout is already drawn)."""
        if self.curriculum.observe(float(batch.correct.float().mean())):
            rubric = getattr(self.env.unwrapped, "rubric", None)
            self.env = self.curriculum.make_env()
            if rubric is not None and self._verifiers_replaced:  # keep verifiers= passed to the trainer
                self.env.unwrapped.rubric = rubric

    def add_to_rubric(self, components: Sequence[Any], *, others_weight: Optional[float] = None) -> None:
        """Score with ``components`` too (a reward model, say) through the env's rubric, so every
        rollout and evaluation — and an env the curriculum rebuilds — scores with them, under the
        rubric's time limits and failure masking. ``others_weight=0.0`` turns the env's own verifiers
        into logged metrics (they still decide ``correct``, so the pass rate still measures the task)."""
        self._rubric_extras = (list(components), others_weight)
        self._extend_rubric()

    def evaluate(self) -> dict:
        self._extend_rubric()
        return super().evaluate()

    def _extend_rubric(self) -> None:
        """Put :meth:`add_to_rubric`'s components into the current env's rubric, if not there yet."""
        if not self._rubric_extras:
            return
        components, others_weight = self._rubric_extras
        target = self.env.unwrapped
        rubric = getattr(target, "rubric", None)
        names = [c.name for c in components]
        if rubric is None:
            raise ValueError(f"{self.env!r} has no rubric to add {names} to; use an env built on a Rubric "
                             f"(rlenv.SingleTurnEnv / MultiTurnEnv)")
        if not set(names) <= set(rubric.names):  # an env rebuilt with the old rubric may have them
            target.rubric = rubric.extended(components, others_weight=others_weight)

    def _sync_engine(self) -> None:
        """Push the policy's weights to the engine once per optimizer step (not once per dynamic
        sampling round: the weights did not change). Every rank reaches the first rollout of a step
        together, so the sync's gathers (FSDP2 / ZeRO-3) line up."""
        version = getattr(self, "_policy_version", 0)
        if getattr(self, "_synced_version", None) != version:
            self.engine.sync_weights(self.unwrapped_model, adapter_only=self.config.lora is not None)
            self._synced_version = version

    @property
    def _lockstep(self) -> bool:
        """True when the policy is sharded over several ranks: every forward of a sharded model is a
        collective, so each rank must run the same number of them."""
        return self.accelerator.num_processes > 1 and self.distributed["type"] in SHARDED

    @torch.no_grad()
    def score_logprobs(self, model: Any, batch: Any, chunks: list) -> torch.Tensor:
        """No-grad log-probs ``[B, T]`` (aligned with ``input_ids``) of every row, one forward per
        length-sorted chunk — the reference pass, or π_old when μ > 1. Empty chunks are skipped —
        except under sharding, where every rank runs as many forwards as the busiest rank (the
        extra ones on a placeholder row, discarded)."""
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        chunks = list(chunks)
        if self._lockstep:
            busiest = int(all_ranks_max(self.accelerator, len(chunks)))
            chunks += [torch.zeros(0, dtype=torch.long)] * (busiest - len(chunks))
        for rows in chunks:
            if len(rows) == 0 and not self._lockstep:
                continue
            mb = gather_rows(batch, rows if len(rows) else torch.arange(1), {}, {})
            lp, _ = completion_logprobs(model, mb["input_ids"].to(self.device), mb["attention_mask"].to(self.device),
                                        mb["start"], self.config.temperature)
            if len(rows):
                out[rows, mb["start"]:mb["start"] + lp.shape[1]] = lp.float().cpu()
        return out

    # -- loop hooks ------------------------------------------------------------------------------
    def next_step_data(self) -> Any:
        """The step's rollout (:meth:`make_step_data`). With the HF engine on a sharded policy the
        weights are gathered once for the whole rollout (all dynamic-sampling rounds): ranks then
        generate independently, however many prompts each draws."""
        from rlenv.engines.full_weights import gathered
        from rlenv.engines.hf import HFEngine

        self.timing = {}
        shares_policy = isinstance(self.engine, HFEngine)  # built here on first use, by every rank
        context = gathered(self.model) if (shares_policy and self._lockstep) else contextlib.nullcontext()
        with context:
            return self.make_step_data()

    def make_step_data(self) -> "StepData":
        """The step's rollout, prepared for :meth:`micro_batches` (subclasses implement)."""
        raise NotImplementedError

    def step_metrics(self, data: "StepData") -> dict:
        return data.metrics

    def micro_batches(self, data: "StepData") -> list:
        """One dict of tensors per micro-batch, each carrying the loss ``normalizer`` it shares with its
        optimizer update. A micro-batch that got no rows (fewer rows than micro-batches; under dynamic
        sampling a rank may keep fewer groups than another) becomes a **placeholder**: real rows of
        this step, run through the same forward and backward with the loss multiplied by 0, so this
        rank still takes part in the gradient all-reduce and the parameter gathers."""
        filler = next((rows for rows in data.chunks if len(rows)), torch.arange(min(2, len(data.batch))))
        out = []
        for rows, norm in zip(data.chunks, data.normalizers):
            mb = gather_rows(data.batch, rows if len(rows) else filler, data.per_token, data.per_row)
            mb["normalizer"] = norm
            if not len(rows):
                mb["placeholder"] = True
            out.append(mb)
        return out

    def training_step(self, data: Any) -> dict:
        t0 = time.perf_counter()
        out = super().training_step(data)
        self._policy_version = getattr(self, "_policy_version", 0) + 1  # the engine's weights are stale now
        train_s = time.perf_counter() - t0 + self.timing.get("prep_s", 0.0)
        out["time/training_s"] = train_s
        out["time/generation_s"] = self.timing.get("generation_s", 0.0)
        out["time/scoring_s"] = self.timing.get("scoring_s", 0.0)
        if self.curriculum is not None:
            out["curriculum/level"] = float(self.curriculum.level_index)
        return out

    def data_state(self) -> dict:
        state = {"global_step": self.global_step}  # prompt draws are a function of the step
        if self.curriculum is not None:
            state["curriculum"] = self.curriculum.state_dict()
        return state

    def load_data_state(self, state: dict) -> None:
        if self.curriculum is not None and state.get("curriculum"):
            self.curriculum.load_state_dict(state["curriculum"])
            self.env = self.curriculum.make_env()


@dataclasses.dataclass
class StepData:
    """One step's training data: the rollout, per-token/per-row training tensors and the
    micro-batches (row indices) in the order the loop feeds them."""

    batch: Any
    per_token: dict
    per_row: dict
    chunks: list  # list of row-index tensors, one per micro-batch
    normalizers: list  # one float per micro-batch (the loss denominator it shares with its update)
    metrics: dict

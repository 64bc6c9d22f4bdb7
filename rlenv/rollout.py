"""Rollout collection: G completions of each task, stepped through the env, into one RolloutBatch.

    from rlenv.rollout import collect_rollouts
    batch = collect_rollouts(lambda: MyEnv(), engine, tasks, group_size=8,
                             sampling=SamplingParams(max_new_tokens=64, seed=0))

How it works:

- Trajectories are built **token-in/token-out**: the engine receives each trajectory's context as
  token ids and the ids it samples are appended as they are, so the ids a trainer trains on are
  exactly the ids that were generated (checked at the end). Env turns (multi-turn) are rendered
  with the chat template and appended as ids with ``loss_mask`` 0.
- Groups are generated in chunks; the env steps (which run the verifiers) of a finished chunk run
  on a thread pool while the engine generates the next chunk, so verification overlaps generation.
- A step that raises costs that sample its reward (``failed=True``), never the run.
- Limits: ``max_turns`` (default: the env's) and ``max_total_tokens`` (prompt + all turns); a
  trajectory stopped by either, or whose last turn hit ``max_new_tokens``, is ``truncated``.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import queue
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

import torch

from verifiers.base import passes

from .batch import RolloutBatch
from .chat import encode_prompt, env_turn_ids
from .core import Env
from .engines.base import Engine, SamplingParams
from .rollout_metrics import rollout_metrics

__all__ = ["collect_rollouts", "env_turn_ids"]


@dataclasses.dataclass
class _Trajectory:
    group: int
    task: Any
    env: Any = None
    messages: list = dataclasses.field(default_factory=list)
    ids: list = dataclasses.field(default_factory=list)
    prompt_len: int = 0
    loss_mask: list = dataclasses.field(default_factory=list)
    logprobs: list = dataclasses.field(default_factory=list)
    generated: list = dataclasses.field(default_factory=list)  # every sampled id, in order
    texts: list = dataclasses.field(default_factory=list)
    reward: float = 0.0
    scores: dict = dataclasses.field(default_factory=dict)
    failed: bool = False
    correct: Optional[bool] = None
    truncated: bool = False
    done: bool = False
    turns: int = 0
    pending_reply: Optional[list] = None  # env messages to append before the next turn
    last_ids: list = dataclasses.field(default_factory=list)  # the ids sampled in the last turn
    failures: dict = dataclasses.field(default_factory=dict)  # "<component>/<kind>" -> count


class _Envs:
    """Gives each trajectory an env.

    - a factory (env id, Env class or callable): one env per live trajectory, reused afterwards;
    - a multi-turn instance: one copy per live trajectory (each needs its own episode state);
    - a single-turn instance: ``workers`` copies, each used by one thread at a time for a
      ``reset`` + ``step`` pair, so verifiers run in parallel.

    Copies of :class:`rlenv.MultiTurnEnv` (and so ``SingleTurnEnv``) are shallow (they share the task source
    and rubric; their ``reset`` rebinds all per-episode state); other envs are deep-copied.
    """

    def __init__(self, env_or_factory: Any, workers: int):
        self.free: list = []
        self.made: list = []
        self.shared: Optional[queue.Queue] = None
        self.instance: Optional[Env] = None
        self.factory: Optional[Callable] = None
        if isinstance(env_or_factory, str):
            from .registry import make

            env_id, first = env_or_factory, make(env_or_factory)
            self.made.append(first)  # built here, so closed here
            if getattr(first, "max_turns", 1) > 1:  # multi-turn: a fresh env per live trajectory
                self.free.append(first)
                env_or_factory = lambda: make(env_id)  # noqa: E731
            else:  # single-turn: shared like an instance, no env built per sample
                env_or_factory = first
        if isinstance(env_or_factory, type):  # an Env class: each call builds one
            self.factory = env_or_factory
        elif hasattr(env_or_factory, "reset") and hasattr(env_or_factory, "step"):
            self.instance = env_or_factory
            self.factory = None
            if getattr(env_or_factory, "max_turns", 1) > 1:
                self.factory = lambda: _clone(env_or_factory)
            else:
                self.shared = queue.Queue()
                for i in range(max(1, workers)):
                    self.shared.put(env_or_factory if i == 0 else _clone(env_or_factory))
        elif callable(env_or_factory):
            self.factory = env_or_factory
        else:
            raise TypeError(f"collect_rollouts needs an Env, an env id or a factory returning an Env; "
                            f"got {type(env_or_factory).__name__}")

    def probe(self) -> Env:
        """An env to read attributes from and draw tasks with (before any worker runs)."""
        return self.instance if self.instance is not None else self.acquire()

    def acquire(self) -> Optional[Env]:
        if self.factory is None:
            return None  # shared copies are taken per call
        if self.free:
            return self.free.pop()
        env = self.factory()
        self.made.append(env)
        return env

    def release(self, env: Optional[Env]) -> None:
        if self.factory is not None and env is not None:
            self.free.append(env)

    def _with_shared(self, fn: Callable[[Env], Any]) -> Any:
        env = self.shared.get()
        try:
            return fn(env)
        finally:
            self.shared.put(env)

    def reset(self, env: Optional[Env], task: Any) -> tuple:
        if env is None:
            return self._with_shared(lambda e: e.reset(options={"task": task}))
        return env.reset(options={"task": task})

    def step(self, env: Optional[Env], task: Any, text: str) -> tuple:
        """One env step; an exception becomes a failed, finished step (a broken verifier costs one
        sample's reward)."""
        try:
            if env is None:
                return self._with_shared(lambda e: (e.reset(options={"task": task}), e.step(text))[1])
            return env.step(text)
        except Exception as e:  # noqa: BLE001 - anything the env raises is one sample's problem
            return [], 0.0, True, False, {"failed": True, "error": f"{type(e).__name__}: {e}", "env_raised": True}

    def close(self) -> None:
        for env in self.made:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _clone(env: Env) -> Env:
    from .env import MultiTurnEnv

    return copy.copy(env) if isinstance(env, MultiTurnEnv) else copy.deepcopy(env)


def _draw_tasks(env: Env, n: int, seed: Optional[int]) -> list:
    tasks = []
    for i in range(n):
        _, info = env.reset(seed=None if seed is None else seed + i)
        if "task" not in info:
            raise ValueError(f"{env!r}.reset() returned no info['task']; pass the tasks themselves to "
                             f"collect_rollouts instead of a count")
        tasks.append(info["task"])
    return tasks


def collect_rollouts(env_or_factory: Union[Env, str, Callable[[], Env]], engine: Engine,
                     tasks_or_n: Union[Sequence[Any], int], group_size: int = 1,
                     sampling: Optional[SamplingParams] = None, *, max_turns: Optional[int] = None,
                     max_total_tokens: Optional[int] = None, chunk_groups: Optional[int] = None,
                     verifier_workers: int = 4, seed: Optional[int] = None) -> RolloutBatch:
    """Sample ``group_size`` trajectories of each task and return them as one :class:`RolloutBatch`.

    Args:
        env_or_factory: an env id, a zero-argument factory, or an env instance (single-turn: one
            copy per verifier worker; multi-turn: one copy per live trajectory).
        engine: the generation engine; its tokenizer renders chat templates.
        tasks_or_n: the tasks (anything ``env.reset(options={"task": ...})`` accepts), or a number
            of tasks to draw from the env (seeded by ``seed``).
        group_size: G, completions per task (they share ``group_ids``).
        sampling: sampling settings; ``n`` is ignored (``group_size`` rules).
        chunk_groups: groups generated per engine call (default: about a quarter of the groups, so
            verification of one chunk overlaps generation of the next).
    """
    if group_size < 1:
        raise ValueError(f"group_size must be ≥ 1, got {group_size}")
    sampling = sampling or SamplingParams()
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise ValueError(f"{type(engine).__name__} has no tokenizer; rollouts need one to build token ids")
    envs = _Envs(env_or_factory, verifier_workers)
    probe = envs.probe()
    turn_limit = max_turns or getattr(probe, "max_turns", 1) or 1
    tasks = _draw_tasks(probe, tasks_or_n, seed) if isinstance(tasks_or_n, int) else list(tasks_or_n)
    if envs.instance is None:
        envs.release(probe)
    if not tasks:
        raise ValueError("collect_rollouts got no tasks")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0

    groups = [[_Trajectory(group=g, task=t) for _ in range(group_size)] for g, t in enumerate(tasks)]
    per_chunk = chunk_groups or max(1, -(-len(groups) // 4))
    chunks = [sum(groups[i:i + per_chunk], []) for i in range(0, len(groups), per_chunk)]
    stats = {"gen_time": 0.0, "gen_tokens": 0, "wait_time": 0.0}
    start = time.perf_counter()
    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, verifier_workers)) as pool:
            ready = list(range(len(chunks)))
            pending: dict = {}  # chunk index -> list of (trajectory, future)
            finished: queue.SimpleQueue = queue.SimpleQueue()  # chunks whose env steps all completed
            turn_of = [0] * len(chunks)
            while ready or pending:
                if ready:
                    c = ready.pop(0)
                    items = _generate_turn(chunks[c], c, turn_of[c], engine, envs, tokenizer, sampling,
                                           max_total_tokens, turn_limit, group_size, pool, stats)
                    turn_of[c] += 1
                    if items:
                        pending[c] = items
                        _notify_when_done(c, [f for _, f in items], finished)
                    continue
                t0 = time.perf_counter()
                c = finished.get()
                stats["wait_time"] += time.perf_counter() - t0
                for traj, fut in pending.pop(c):
                    _apply_step(traj, fut.result(), turn_limit, envs)
                if any(not t.done for t in chunks[c]):
                    ready.append(c)
    finally:
        envs.close()
    trajs = [t for g in groups for t in g]
    batch = _to_batch(trajs, tasks, tokenizer, pad_id)
    batch.metrics = rollout_metrics(batch, trajs, stats, time.perf_counter() - start)
    return batch


def _notify_when_done(c: int, futures: list, finished: queue.SimpleQueue) -> None:
    """Put ``c`` on ``finished`` once every future has completed (one wake-up per chunk)."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            finished.put(c)

    for f in futures:
        f.add_done_callback(one_done)


def _generate_turn(chunk, c, turn, engine, envs, tokenizer, sampling, max_total_tokens, turn_limit,
                   group_size, pool, stats) -> list:
    """Generate one turn for the live trajectories of a chunk and submit their env steps."""
    live = [t for t in chunk if not t.done]
    encoded: dict = {}  # the G samples of a task share their prompt: rendered and tokenised once
    for i, t in enumerate(live):
        if turn == 0:
            t.env = envs.acquire()
            head = live[i - i % group_size]
            if t.env is None and head is not t:  # a shared single-turn env: the group's reset serves all
                t.messages, t.task = [dict(m) for m in head.messages], head.task
            else:
                obs, info = envs.reset(t.env, t.task)
                t.messages = [dict(m) for m in obs]
                t.task = (info or {}).get("task", t.task)  # the env's normalised Task, for the batch
            key = repr(t.messages)
            if key not in encoded:
                encoded[key] = encode_prompt(tokenizer, t.messages)
            t.ids = list(encoded[key])
            t.prompt_len = len(t.ids)
            t.loss_mask, t.logprobs = [0] * len(t.ids), [0.0] * len(t.ids)
        elif t.pending_reply is not None:
            extra = env_turn_ids(tokenizer, t.messages[:-1], t.last_ids, t.texts[-1], t.pending_reply)
            t.messages.extend(t.pending_reply)
            t.ids += extra
            t.loss_mask += [0] * len(extra)
            t.logprobs += [0.0] * len(extra)
            t.pending_reply = None
    budgets = {id(t): (max_total_tokens - len(t.ids)) if max_total_tokens else sampling.max_new_tokens for t in live}
    for t in live:
        if budgets[id(t)] <= 0:
            t.truncated, t.done = True, True
            envs.release(t.env)
    live = [t for t in live if not t.done]
    if not live:
        return []
    max_new = min(sampling.max_new_tokens, max(budgets[id(t)] for t in live))
    seed = None if sampling.seed is None else sampling.seed + 100_003 * c + 7_919 * turn
    if turn == 0:  # the G samples of a group share one prompt: prefilled once by the engine
        heads = live[::group_size]
        params = dataclasses.replace(sampling, n=group_size, max_new_tokens=max_new, seed=seed)
        prompts = [t.ids for t in heads]
    else:
        params = dataclasses.replace(sampling, n=1, max_new_tokens=max_new, seed=seed)
        prompts = [t.ids for t in live]
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    stats["gen_time"] += time.perf_counter() - t0
    comps = [c for group in outs for c in group]
    if len(comps) != len(live):
        raise RuntimeError(f"{type(engine).__name__} returned {len(comps)} completions for {len(live)} requests")
    submitted = []
    for t, comp in zip(live, comps):
        ids, lps, text, reason = comp.token_ids, comp.logprobs, comp.text, comp.finish_reason
        if len(ids) > budgets[id(t)]:  # the total-length limit is tighter for this row than for the call
            ids, lps, reason = ids[:budgets[id(t)]], lps[:budgets[id(t)]], "length"
            text = tokenizer.decode(ids, skip_special_tokens=True)
        stats["gen_tokens"] += len(ids)
        t.ids += list(ids)
        t.loss_mask += [1] * len(ids)
        t.logprobs += list(lps)
        t.generated += list(ids)
        t.texts.append(text)
        t.last_ids = list(ids)
        t.messages.append({"role": "assistant", "content": text})
        t.turns += 1
        if reason == "length":
            t.truncated = True
        submitted.append((t, pool.submit(envs.step, t.env, t.task, text)))
    return submitted


def _apply_step(t: _Trajectory, result: tuple, turn_limit: int, envs: _Envs) -> None:
    """Record an env step's outcome; end the trajectory when the env, a limit or a cut-off turn says so."""
    obs, reward, terminated, truncated, info = result
    info = info or {}
    t.reward += float(reward)
    if info.get("scores"):
        t.scores = dict(info["scores"])
    t.failed = t.failed or bool(info.get("failed", False))
    if info.get("env_raised"):  # the env's step itself raised (see _Envs.step)
        t.failures["env/exception"] = t.failures.get("env/exception", 0) + 1
    for name, verdict in (info.get("verdicts") or {}).items():
        if verdict == "failed":
            kind = ((info.get("details") or {}).get(name) or {}).get("failure", "exception")
            key = f"{name}/{kind}"
            t.failures[key] = t.failures.get(key, 0) + 1
    if "correct" in info:
        t.correct = info["correct"]
    if terminated or truncated or t.truncated or t.turns >= turn_limit:
        t.truncated = t.truncated or bool(truncated) or (not terminated and t.turns >= turn_limit)
        t.done = True
        envs.release(t.env)
        t.env = None
    else:
        t.pending_reply = [dict(m) for m in (obs or [])]


def _to_batch(trajs: list, tasks: list, tokenizer: Any, pad_id: int) -> RolloutBatch:
    T = max(len(t.ids) for t in trajs)
    B = len(trajs)
    input_ids = torch.full((B, T), int(pad_id), dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    loss_mask = torch.zeros((B, T), dtype=torch.float32)
    logprobs = torch.zeros((B, T), dtype=torch.float32)
    for b, t in enumerate(trajs):
        n = len(t.ids)
        input_ids[b, :n] = torch.tensor(t.ids, dtype=torch.long)
        attention[b, :n] = 1
        loss_mask[b, :n] = torch.tensor(t.loss_mask, dtype=torch.float32)
        logprobs[b, :n] = torch.tensor(t.logprobs, dtype=torch.float32)
        # token-in/token-out: the ids under the loss mask are exactly the ids the engine sampled
        trained = input_ids[b, :n][loss_mask[b, :n].bool()].tolist()
        assert trained == t.generated, f"row {b}: trained ids differ from the sampled ids (re-tokenisation drift)"
    names = sorted({k for t in trajs for k in t.scores})
    components = {k: torch.tensor([float(t.scores.get(k, 0.0)) for t in trajs]) for k in names}
    # "correct" is decided here, once: the env's verdict, else the pass test on the reward
    correct = torch.tensor([bool(t.correct) if t.correct is not None else bool(passes(t.reward)) for t in trajs])
    multi = any(t.turns > 1 for t in trajs)
    # multi-turn rows log the whole exchange after the prompt (env turns included)
    texts = [tokenizer.decode(t.ids[t.prompt_len:], skip_special_tokens=False) if multi
             else (t.texts[-1] if t.texts else "") for t in trajs]
    return RolloutBatch(
        input_ids=input_ids, attention_mask=attention, loss_mask=loss_mask, sampling_logprobs=logprobs,
        rewards=torch.tensor([t.reward for t in trajs], dtype=torch.float32),
        group_ids=torch.tensor([t.group for t in trajs], dtype=torch.long),
        prompt_lengths=torch.tensor([t.prompt_len for t in trajs], dtype=torch.long),
        completion_lengths=loss_mask.sum(-1).long(),
        failed=torch.tensor([t.failed for t in trajs], dtype=torch.bool),
        truncated=torch.tensor([t.truncated for t in trajs], dtype=torch.bool),
        reward_components=components, correct=correct, texts=texts,
        tasks=[t.task for t in trajs],
    )

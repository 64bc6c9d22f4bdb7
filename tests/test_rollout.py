"""Rollout collection on the tiny random model: batch layout, masks, multi-turn token-in/token-out."""

from __future__ import annotations

import string
import threading
import time

import pytest
import torch

from rlenv.core import Env, Task
from rlenv.engines.base import SamplingParams
from rlenv.engines.hf import HFEngine, encode_prompt
from rlenv.engines.sampling import sampling_logprobs
from rlenv.rollout import collect_rollouts

pytestmark = pytest.mark.usefixtures("single_thread")

TASKS = [Task("What is 1+1?", "2", id="a"), Task("Spell cat", "cat", id="b"), Task("Say yes", "yes", id="c")]
# many one-character stop strings: random-model turns end quickly and deterministically (fixed seed)
STOPS = list(string.ascii_letters + string.digits)


def parity(text: str) -> float:
    return float(len(text) % 2 == 0)


class ParityEnv(Env):
    """Single-turn: reward 1 for an even-length completion (random model → mixed rewards).
    Tasks whose id is "boom" make the verifier raise."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.task = (options or {}).get("task") or TASKS[int(self.np_random.integers(len(TASKS)))]
        return [{"role": "user", "content": self.task.prompt}], {"task": self.task}

    def step(self, action):
        if self.task.id == "boom":
            raise RuntimeError("verifier crashed")
        r = parity(action)
        return [], r, True, False, {"scores": {"parity": r, "length": float(len(action))}, "correct": r == 1.0,
                                    "failed": False}


class FeedbackEnv(Env):
    """Three turns: the env answers the first two with feedback, the third ends the episode."""

    max_turns = 3

    def __init__(self, log=None):
        self.log = log if log is not None else []

    def reset(self, *, seed=None, options=None):
        self.task, self.turn, self.history = options["task"], 0, []
        self.history = [{"role": "user", "content": self.task.prompt}]
        return list(self.history), {"task": self.task}

    def step(self, action):
        self.turn += 1
        self.history.append({"role": "assistant", "content": action})
        if self.turn == 3:
            self.log.append(list(self.history))
            return [], parity(action), True, False, {"scores": {"parity": parity(action)}}
        reply = [{"role": "user", "content": f"feedback {self.turn}"}]
        self.history += reply
        return reply, 0.0, False, False, {}


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
            AutoTokenizer.from_pretrained(tiny_model_dir))


@pytest.fixture(scope="module")
def engine(model_and_tok):
    return HFEngine(*model_and_tok)


def check_logprobs_follow_the_layout(model, batch, params):
    """The trainer's view: logits from input_ids[:, :-1] against input_ids[:, 1:], masks from [:, 1:]."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    ref = sampling_logprobs(logits, batch.input_ids[:, 1:], params.temperature, params.top_k, params.top_p)
    mask = batch.loss_mask[:, 1:].bool()
    assert torch.allclose(ref[mask], batch.sampling_logprobs[:, 1:][mask], atol=1e-4)
    assert (batch.sampling_logprobs[~batch.loss_mask.bool()] == 0).all()


def test_single_turn_batch_layout_and_metrics(engine, model_and_tok):
    model, tok = model_and_tok
    params = SamplingParams(max_new_tokens=12, seed=0, temperature=0.9)
    batch = collect_rollouts(ParityEnv(), engine, TASKS, group_size=4, sampling=params)
    assert len(batch) == 12 and batch.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for b in range(len(batch)):
        task = batch.tasks[b]
        prompt = encode_prompt(tok, [{"role": "user", "content": task.prompt}])
        p, n = int(batch.prompt_lengths[b]), int(batch.completion_lengths[b])
        assert p == len(prompt) and batch.input_ids[b, :p].tolist() == prompt
        # the loss mask covers exactly the generated span; the rest of the row is padding
        assert batch.loss_mask[b, p:p + n].eq(1).all() and batch.loss_mask[b].sum() == n
        assert batch.attention_mask[b].sum() == p + n
        assert batch.rewards[b] == parity(batch.texts[b]) == batch.reward_components["parity"][b]
        assert batch.truncated[b] == (n == 12 and batch.input_ids[b, p + n - 1] != tok.eos_token_id)
    check_logprobs_follow_the_layout(model, batch, params)
    m = batch.metrics
    assert m["reward_mean"] == pytest.approx(batch.rewards.mean().item())
    assert m["pass_rate"] == pytest.approx(batch.correct.float().mean().item())
    assert m["verifier/length"] == pytest.approx(batch.reward_components["length"].mean().item())
    assert m["completion_len_max"] <= 12 and m["gen_tokens_per_s"] > 0 and m["failed_verifier_count"] == 0
    for key in ("reward_std", "completion_len_mean", "completion_len_std", "truncation_rate",
                "zero_variance_group_frac"):
        assert key in m
    again = collect_rollouts(ParityEnv(), engine, TASKS, group_size=4, sampling=params)
    assert torch.equal(again.input_ids, batch.input_ids)  # a seeded rollout reproduces


def test_a_crashing_verifier_costs_one_sample(engine):
    tasks = [TASKS[0], Task("explode", None, id="boom")]
    batch = collect_rollouts(ParityEnv, engine, tasks, group_size=2, sampling=SamplingParams(max_new_tokens=4, seed=1))
    assert batch.failed.tolist() == [False, False, True, True]
    assert batch.rewards[2:].eq(0).all() and batch.metrics["failed_verifier_count"] == 2
    assert batch.metrics["verifier_failures/env/exception"] == 2


def _raises_on_cat(completion, task):
    if task.id == "b":
        raise ValueError("broken verifier")
    return 1.0


def _hangs_on_yes(completion, task):
    if task.id == "c":
        import time

        time.sleep(5)
    return 0.5


def test_failures_are_counted_per_component_and_kind(engine):
    """A verifier that raises and one that hangs: each costs its own samples, and the rollout
    metrics say which component failed how (they reach metrics.jsonl through the trainers)."""
    from rlenv.env import SingleTurnEnv
    from verifiers.rubric import Component, Rubric

    env = SingleTurnEnv(TASKS, Rubric([Component(_raises_on_cat, name="strict"),
                                       Component(_hangs_on_yes, 0.0, name="slow", timeout=0.3)]))
    batch = collect_rollouts(env, engine, TASKS, group_size=2, sampling=SamplingParams(max_new_tokens=3, seed=0))
    m = batch.metrics
    assert m["verifier_failures/strict/exception"] == 2 and m["verifier_failures/slow/timeout"] == 2
    assert batch.failed.tolist() == [False, False, True, True, False, False]  # a weight-0 metric never fails a row


def test_drawn_tasks_and_total_length_limit(engine, model_and_tok):
    _, tok = model_and_tok
    batch = collect_rollouts(ParityEnv(), engine, 2, group_size=3, seed=5,
                             sampling=SamplingParams(max_new_tokens=64, seed=2), max_total_tokens=60)
    assert len(batch) == 6 and batch.attention_mask.sum(-1).max() <= 60
    assert len({t.id for t in batch.tasks}) >= 1 and batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    for b in range(6):
        n = int(batch.attention_mask[b].sum())
        ended = batch.input_ids[b, n - 1] == tok.eos_token_id
        assert bool(batch.truncated[b]) == (not ended) and 0 < batch.completion_lengths[b] < 64
    assert batch.metrics["truncation_rate"] == pytest.approx(batch.truncated.float().mean().item())


def test_multi_turn_masks_and_token_in_token_out(engine, model_and_tok):
    model, tok = model_and_tok
    log: list = []
    params = SamplingParams(max_new_tokens=40, seed=3, stop=STOPS)
    batch = collect_rollouts(lambda: FeedbackEnv(log), engine, TASKS[:2], group_size=2, sampling=params)
    assert batch.metrics["turns_mean"] == 3 and len(log) == 4
    check_logprobs_follow_the_layout(model, batch, params)
    for b in range(len(batch)):
        n = int(batch.attention_mask[b].sum())
        ids, mask = batch.input_ids[b, :n].tolist(), batch.loss_mask[b, :n].tolist()
        p = int(batch.prompt_lengths[b])
        assert mask[:p] == [0] * p and mask[p] == 1
        # split the row into alternating model / env spans: 3 model turns, 2 env turns between them
        spans, start = [], p
        for i in range(p + 1, n + 1):
            if i == n or mask[i] != mask[start]:
                spans.append((mask[start], ids[start:i]))
                start = i
        assert [k for k, _ in spans] == [1, 0, 1, 0, 1]
        for turn, (_, env_ids) in enumerate(spans[1::2], start=1):
            env_text = tok.decode(env_ids, skip_special_tokens=False)
            # the template's turn closing (only what the model did not generate), the reply, the next prompt
            assert env_text.endswith(f"<|im_start|>user\nfeedback {turn}<|im_end|>\n<|im_start|>assistant\n")
            assert env_text in (f"\n<|im_start|>user\nfeedback {turn}<|im_end|>\n<|im_start|>assistant\n",
                                f"<|im_end|>\n<|im_start|>user\nfeedback {turn}<|im_end|>\n<|im_start|>assistant\n")
        # the env saw, as each action, the text of exactly the ids the model generated (cut at the stop)
        model_texts = [tok.decode(s, skip_special_tokens=True) for k, s in spans if k == 1]
        history = next(h for h in log if h[0]["content"] == batch.tasks[b].prompt
                       and [m["content"] for m in h if m["role"] == "assistant"][0] in model_texts[0])
        actions = [m["content"] for m in history if m["role"] == "assistant"]
        for action, text in zip(actions, model_texts):
            assert text.startswith(action) and len(text) - len(action) <= 1  # at most the stop character


def test_verification_overlaps_generation(model_and_tok):
    model, tok = model_and_tok
    spans: dict = {"gen": [], "step": []}

    class TimedEngine(HFEngine):
        def generate(self, prompts, params, **kw):
            t0 = time.perf_counter()
            try:
                return super().generate(prompts, params, **kw)
            finally:
                spans["gen"].append((t0, time.perf_counter()))

    class SlowVerifierEnv(ParityEnv):
        def step(self, action):
            t0 = time.perf_counter()
            time.sleep(0.2)  # a slow verifier (sandbox, reward model)
            spans["step"].append((t0, time.perf_counter(), threading.get_ident()))
            return super().step(action)

    tasks = [Task(f"q{i}", str(i)) for i in range(4)]
    # a factory (one env per trajectory) and a shared single-turn instance (one copy per worker)
    for env in (SlowVerifierEnv, SlowVerifierEnv()):
        spans["gen"].clear(), spans["step"].clear()
        batch = collect_rollouts(env, TimedEngine(model, tok), tasks, group_size=2, chunk_groups=1,
                                 verifier_workers=4, sampling=SamplingParams(max_new_tokens=16, seed=0))
        assert len(spans["gen"]) == 4 and len(spans["step"]) == 8
        assert [t.prompt for t in batch.tasks] == [t.prompt for t in tasks for _ in range(2)]
        assert batch.rewards.tolist() == [parity(x) for x in batch.texts]
        # verification of one chunk overlaps generation of the next, and verifiers run in parallel
        assert any(s0 < g1 and g0 < s1 for s0, s1, _ in spans["step"] for g0, g1 in spans["gen"])
        assert any(a[0] < b[1] and b[0] < a[1] and a[2] != b[2] for a in spans["step"] for b in spans["step"])
        assert all(tid != threading.main_thread().ident for *_, tid in spans["step"])


def test_bad_arguments_are_named(engine):
    with pytest.raises(ValueError, match="group_size"):
        collect_rollouts(ParityEnv(), engine, TASKS, group_size=0)
    with pytest.raises(TypeError, match="factory"):
        collect_rollouts(42, engine, TASKS)


def test_registered_env_id(engine):
    import rlenv

    if "arithmetic-v0" not in rlenv.envs():
        pytest.skip("arithmetic-v0 is not registered in this checkout")
    batch = collect_rollouts("arithmetic-v0", engine, 2, group_size=2, seed=0,
                             sampling=SamplingParams(max_new_tokens=4, seed=0))
    assert len(batch) == 4 and all(isinstance(t, Task) for t in batch.tasks)
    assert batch.tasks[0] is batch.tasks[1] and batch.group_ids.tolist() == [0, 0, 1, 1]
    assert set(batch.reward_components) and batch.correct is not None


def test_multi_turn_env_instance_gets_one_copy_per_trajectory(engine):
    import rlenv

    class Retry(rlenv.MultiTurnEnv):
        max_turns = 3

        def env_response(self, messages, task):
            return "try again", False  # never satisfied: the turn limit truncates

    env = Retry([Task("Guess", "x")], [parity])
    batch = collect_rollouts(env, engine, list(env.source), group_size=3,
                             sampling=SamplingParams(max_new_tokens=30, seed=1, stop=STOPS))
    assert batch.metrics["turns_mean"] == 3 and batch.truncated.all()
    assert env.task is None  # the instance itself was never stepped: copies were
    for b in range(3):  # model, env, model, env, model
        mask = batch.loss_mask[b, int(batch.prompt_lengths[b]):int(batch.attention_mask[b].sum())]
        assert int((mask[1:] != mask[:-1]).sum()) == 4

"""A shared SFT warm start for the online-trainer learning tests (GRPO, PPO, online DPO).

The RL tests start from a tiny model that already answers in the task's format some of the time; a
random model never earns a reward. The warm start is a short plain SFT (cross-entropy on the answer
tokens only, :func:`trainers.losses_pref.sft_loss`), written once per test session to a folder all
tests share (``ensure_sft_start``), so three learning tests pay for it once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

#: eval settings shared by the learning tests (the loop's before/after evaluation)
EVAL = dict(eval_num_tasks=128, eval_max_new_tokens=12, per_device_eval_batch_size=128)
#: the procedural task every learning test uses: two-digit addition, no system prompt (short prompts)
ENV_KWARGS = dict(digits=2, operators="+", system_prompt="")
SFT_STEPS, SFT_PHASES, SFT_LR, SFT_BATCH, SFT_SEED = 300, 2, 1e-3, 32, 0


def make_env():
    """``arithmetic-v0`` with :data:`ENV_KWARGS`."""
    import rlenv

    return rlenv.make("arithmetic-v0", **ENV_KWARGS)


def _examples(env, tokenizer, n: int, seed: int):
    rows = []
    for i in range(n):
        obs, info = env.reset(seed=seed + i)
        prompt = tokenizer.apply_chat_template(obs, add_generation_prompt=True, tokenize=False)
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        c = tokenizer(info["task"].info["target"] + tokenizer.eos_token, add_special_tokens=False).input_ids
        rows.append((p, c))
    return rows


def _sft(base: str, out: Path, data_seed: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.losses_pref import sft_loss
    from trainers.online import completion_logprobs

    torch.manual_seed(SFT_SEED)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = _examples(make_env(), tok, SFT_STEPS * SFT_BATCH, seed=data_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR)
    model.train()
    for s in range(SFT_STEPS):
        if os.environ.get("RL_HELPERS_VERBOSE") and s % 25 == 0:
            print(f"sft step {s}", flush=True)
        batch = rows[s * SFT_BATCH:(s + 1) * SFT_BATCH]
        T = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), T), tok.pad_token_id)
        attn = torch.zeros_like(ids)
        mask = torch.zeros(len(batch), T)
        for b, (p, c) in enumerate(batch):
            ids[b, :len(p) + len(c)] = torch.tensor(p + c)
            attn[b, :len(p) + len(c)] = 1
            mask[b, len(p):len(p) + len(c)] = 1
        start = min(len(p) for p, _ in batch)
        logp, _ = completion_logprobs(model, ids, attn, start)
        loss = sft_loss(logp, mask[:, start:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)


def ensure_sft_start(base_model_dir: str, cache_root: Path) -> str:
    """The SFT warm start of ``base_model_dir`` under ``cache_root`` (trained on first call).

    Two phases of :data:`SFT_STEPS` steps on fresh examples (the second restarts AdamW), each
    cached, so the phase-one model can be inspected on its own."""
    prev = base_model_dir
    for phase in range(SFT_PHASES):
        out = Path(cache_root) / f"sft-arithmetic-{phase + 1}"
        if not (out / "config.json").exists():
            _sft(str(prev), out, data_seed=500_000 + 100_000 * phase)
        prev = out
    return str(prev)


def cache_root(tmp_path_factory) -> Path:
    """Where the warm start lives: ``$RLENV_TEST_SFT_CACHE`` (reuse across sessions while
    developing) or the session's base temp folder (shared by all test files of one session)."""
    env = os.environ.get("RLENV_TEST_SFT_CACHE")
    return Path(env) if env else Path(tmp_path_factory.getbasetemp()) / "rl-shared"


def eval_pass_rates(result: dict) -> tuple[float, float]:
    """``(before, after)`` greedy pass rates from a trainer's ``train()`` result (the loop evaluates
    before the first and after the last step, on the same held-out tasks)."""
    hist = [h for h in result["eval_history"] if "eval/pass_rate" in h]
    return hist[0]["eval/pass_rate"], hist[-1]["eval/pass_rate"]


@contextlib.contextmanager
def one_thread():
    """Run with one intra-op thread: the tiny model's matmuls gain nothing from two, and on a busy
    2-core machine two threads per process oversubscribe the cores (5x slower measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def sft_start(tiny_model_dir, tmp_path_factory):
    """Path of the SFT warm start of the ``tiny`` preset (trained once, cached on disk)."""
    with one_thread():
        return ensure_sft_start(tiny_model_dir, cache_root(tmp_path_factory))

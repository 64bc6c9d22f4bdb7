"""A shared SFT warm start for the online-trainer learning tests (GRPO, PPO, online DPO).

The RL tests start from a tiny model that already answers in the task's format some of the time; a
random model never earns a reward. The warm start is a short plain SFT (cross-entropy on the answer
tokens only, :func:`trainers.losses_pref.sft_loss`), written once per test session to a folder all
tests share (``ensure_sft_start``), so three learning tests pay for it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: the procedural task every learning test uses: two-digit addition, no system prompt (short prompts)
ENV_KWARGS = dict(digits=2, operators="+", system_prompt="")
SFT_STEPS, SFT_LR, SFT_BATCH, SFT_SEED = 300, 1e-3, 32, 0


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


def _sft(base: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.losses_pref import sft_loss
    from trainers.online import completion_logprobs

    torch.manual_seed(SFT_SEED)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = _examples(make_env(), tok, SFT_STEPS * SFT_BATCH, seed=500_000)
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
    """The SFT warm start of ``base_model_dir`` under ``cache_root`` (trained on first call)."""
    out = Path(cache_root) / "sft-arithmetic"
    if not (out / "config.json").exists():
        _sft(base_model_dir, out)
    return str(out)


def pass_rate(model_dir_or_model, n: int = 128) -> float:
    """Greedy pass rate on ``n`` held-out tasks (the trainers' own evaluation)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.evaluation import evaluate_pass_rate

    model = model_dir_or_model
    if isinstance(model, (str, os.PathLike)):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model.config._name_or_path) if not hasattr(model, "_rl_tok") else model._rl_tok
    return evaluate_pass_rate(model, tok, make_env(), num_tasks=n, max_new_tokens=12)["pass_rate"]

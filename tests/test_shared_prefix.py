"""The shared-prefix training forward (each group's prompt once, its cache indexed out to the G
rows) gives the log-probs, entropies and parameter gradients of the plain per-row forward."""

from __future__ import annotations

import torch

from trainers.online import completion_logprobs, policy_logprobs, shared_prefix_logprobs


def _batch(G=3, plens=(5, 7), T=14):
    """Two groups with different prompt lengths, uneven completions, rows shuffled, right-padded."""
    g = torch.Generator().manual_seed(0)
    rows, gids, pl, att = [], [], [], []
    for k_group, p in enumerate(plens):
        prompt = torch.randint(3, 250, (p,), generator=g)
        for k in range(G):
            r = torch.cat([prompt, torch.randint(3, 250, (2 + 2 * k + k_group,), generator=g)])
            rows.append(torch.cat([r, torch.zeros(T - len(r), dtype=torch.long)]))
            att.append(torch.tensor([1] * len(r) + [0] * (T - len(r))))
            gids.append(k_group)
            pl.append(p)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    return (torch.stack(rows)[perm], torch.stack(att)[perm], torch.tensor(gids)[perm], torch.tensor(pl)[perm])


def _run(model, fn, mask):
    model.zero_grad()
    lp, ent = fn()
    (lp * mask).sum().backward()
    return lp.detach() * mask, ent * mask, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_shared_prefix_matches_plain_forward(tiny_model_dir, single_thread):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids, att, gids, pl = _batch()
    start, T = int(pl.min()), ids.shape[1]
    cols = torch.arange(start, T)[None]
    mask = (cols >= pl[:, None]) & (cols < att.sum(-1)[:, None])  # completion tokens only
    plain = _run(model, lambda: completion_logprobs(model, ids, att, start, 0.7, with_entropy=True), mask)
    shared = _run(model, lambda: shared_prefix_logprobs(model, ids, att, start, gids, pl, 0.7, with_entropy=True),
                  mask)
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=1e-5)
    for n in plain[2]:
        torch.testing.assert_close(shared[2][n], plain[2][n], atol=1e-5, rtol=1e-4, msg=n)
    assert plain[0].abs().sum() > 0


def test_rows_without_a_shared_prefix_fall_back(tiny_model_dir, single_thread):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids, att, gids, pl = _batch()
    ids = ids.clone()
    ids[0, 0] = 251  # this row's prompt no longer equals its group's
    start = int(pl.min())
    assert shared_prefix_logprobs(model, ids, att, start, gids, pl) is None
    mb = {"input_ids": ids, "attention_mask": att, "start": start, "group_ids": gids, "prompt_lengths": pl}
    with torch.no_grad():
        lp, _ = policy_logprobs(model, mb)
        ref, _ = completion_logprobs(model, ids, att, start)
    torch.testing.assert_close(lp, ref)

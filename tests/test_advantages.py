"""Advantage estimators against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.advantages import (ADVANTAGES, dr_grpo_advantages, gae, get_advantage, grpo_advantages,
                                 reinforce_pp_advantages, rloo_advantages)

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 5.0])
G = torch.tensor([3, 3, 3, 3, 7, 7, 7, 7])  # group ids need not be contiguous or start at 0


def test_grpo_group_normalised():
    # group 3: mean .5, unbiased std sqrt(1/3); group 7: mean 2.75, std sqrt(6.75/3) = 1.5
    s = math.sqrt(1 / 3)
    want = torch.tensor([.5 / s, -.5 / s, -.5 / s, .5 / s, -.75 / 1.5, -.75 / 1.5, -.75 / 1.5, 2.25 / 1.5])
    torch.testing.assert_close(grpo_advantages(R, G, eps=0.0), want)
    # eps guards the all-equal group: advantage 0, not NaN
    assert grpo_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long)).abs().max() == 0


def test_dr_grpo_no_std():
    torch.testing.assert_close(dr_grpo_advantages(R, G),
                               torch.tensor([.5, -.5, -.5, .5, -.75, -.75, -.75, 2.25]))


def test_rloo_leave_one_out():
    # row 0: 1 - mean(0, 0, 1) = 2/3; row 7: 5 - mean(2, 2, 2) = 3
    out = rloo_advantages(R, G)
    torch.testing.assert_close(out[0], torch.tensor(2 / 3))
    torch.testing.assert_close(out[7], torch.tensor(3.0))
    torch.testing.assert_close(out[4], torch.tensor(2 - 3.0))


def test_reinforce_pp_batch_normalised():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    std = math.sqrt(1.25)  # population std of 0..3
    torch.testing.assert_close(reinforce_pp_advantages(r, None, eps=0.0), (r - 1.5) / std)


def test_invalid_rows_excluded_and_zeroed():
    r = torch.tensor([1.0, 0.0, 100.0, 0.0])
    g = torch.zeros(4, dtype=torch.long)
    valid = torch.tensor([True, True, False, True])
    out = dr_grpo_advantages(r, g, valid)
    torch.testing.assert_close(out, torch.tensor([2 / 3, -1 / 3, 0.0, -1 / 3]))


def test_gae_hand_example():
    # rewards only on the last token, V = (.5, .6, .7), γ = 1, λ = .95:
    # δ2 = 1 - .7 = .3; δ1 = .7 - .6 = .1; δ0 = .6 - .5 = .1
    # A2 = .3; A1 = .1 + .95·.3 = .385; A0 = .1 + .95·.385 = .46575
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # last position is padding
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.46575, 0.385, 0.3, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.96575, 0.985, 1.0, 0.0]]))


def test_gae_discount_and_gap():
    # γ = .9, λ = 1 (Monte-Carlo returns minus V); an env-inserted token (mask 0) in the middle is skipped
    rewards = torch.tensor([[0.0, 0.0, 2.0]])
    values = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[1.8, 0.0, 2.0]]))


def test_registry_lookup_and_error():
    assert get_advantage("grpo") is grpo_advantages
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp"} <= set(ADVANTAGES.names())
    assert "gae" not in ADVANTAGES  # per-token (PPO), not an outcome estimator GRPO could pick
    with pytest.raises(ValueError, match="did you mean `rloo`"):
        get_advantage("rlo")

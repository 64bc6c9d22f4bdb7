"""Policy losses, KL, aggregation, TIS and value loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.losses import (AdaptiveKLController, masked_sum, register_policy_loss, aggregate, clipped_surrogate_loss, clipped_value_loss,
                             cispo_loss, entropy_from_logits, get_policy_loss, gspo_loss, kl_k1, kl_k2,
                             kl_k3, kl_loss_term, kl_shaped_rewards, selective_log_softmax,
                             truncated_importance_weights)


def test_clip_higher_asymmetric():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 1.25, 0.7, 0.5]]))  # ratios
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, st = clipped_surrogate_loss(logp, old, adv, torch.ones(1, 4), epsilon_low=0.2, epsilon_high=0.28)
    # A>0: min(r, clip) -> 1.28 for r=1.5, 1.25 unclipped; A<0: -max(r, clip)... = -min(-r, -clip(r))
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -1.25, 0.8, 0.8]]))
    assert st["clip_frac_high"].item() == 0.25 and st["clip_frac_low"].item() == 0.5


def test_gspo_uses_length_normalised_sequence_ratio():
    logp = torch.tensor([[0.1, 0.3, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the 5.0 is padding and must not count
    loss, _ = gspo_loss(logp, torch.zeros(1, 3), torch.tensor([-1.0]), mask, epsilon_low=0.5, epsilon_high=0.5)
    assert loss.shape == (1, 1)
    torch.testing.assert_close(loss, torch.tensor([[math.exp(0.2)]]))


def test_cispo_keeps_gradient_of_clipped_tokens():
    logp = torch.log(torch.tensor([[3.0, 1.0]])).requires_grad_()
    loss, _ = cispo_loss(logp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2), epsilon_high=1.0)
    torch.testing.assert_close(loss.detach(), -torch.tensor([[2.0 * 2.0 * math.log(3.0), 0.0]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-4.0, -2.0]]))  # -clip(r)·A, r=3 capped at 2


def test_aggregations():
    per = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(per, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(per, mask, "seq-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(per, mask, "constant", max_length=5).item() == pytest.approx(10 / (2 * 5))
    assert aggregate(per, mask, "token-mean", normalizer=8).item() == pytest.approx(10 / 8)
    with pytest.raises(ValueError, match="max_length"):
        aggregate(per, mask, "constant")
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(per, mask, "mean")


def test_kl_estimators():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(0.5)  # log π_ref − log π
    assert kl_k1(lp, ref).item() == pytest.approx(math.log(2))
    assert kl_k2(lp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_k3(lp, ref).item() == pytest.approx(math.exp(d) - d - 1)
    # ratio-weighted term has the same value when π = π_old
    assert kl_loss_term(lp, ref, lp).item() == pytest.approx(kl_k3(lp, ref).item())


def test_kl_shaped_rewards_score_on_last_token():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    lp = torch.tensor([[0.0, -1.0, -2.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0]])
    r, kl = kl_shaped_rewards(torch.tensor([3.0]), lp, ref, mask, kl_coef=0.1, kl="k1")
    torch.testing.assert_close(kl, torch.tensor([[0.0, 0.5, -1.0, 0.0]]))
    torch.testing.assert_close(r, torch.tensor([[0.0, -0.05, 0.1 + 3.0, 0.0]]))


def test_adaptive_kl_controller():
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    c.update(12.0, n_steps=10)  # error clipped at +0.2 → β·(1 + 0.2·10/100)
    assert c.value == pytest.approx(0.1 * 1.02)
    c.update(3.0, n_steps=10)  # error −0.5 clipped at −0.2
    assert c.value == pytest.approx(0.1 * 1.02 * 0.98)


def test_truncated_importance_weights():
    trainer = torch.log(torch.tensor([[0.9, 0.5, 0.1]]))
    sampler = torch.log(torch.tensor([[0.3, 0.5, 0.2]]))
    mask = torch.ones(1, 3)
    w = truncated_importance_weights(trainer, sampler, mask, "token", "truncate", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 1.0, 0.5]]))
    w = truncated_importance_weights(trainer, sampler, mask, "token", "mask", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0, 0.5]]))
    w = truncated_importance_weights(trainer, sampler, mask, "sequence", "truncate", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[1.5]]))  # 3 · 1 · 0.5


def test_clipped_value_loss():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    loss, st = clipped_value_loss(v, old, ret, torch.ones(1, 2), clip_range=0.5)
    # token 0: unclipped (1-2)²=1, clipped (0.5-2)²=2.25 → 2.25; token 1: 1 and 1 → 1
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1) / 2)
    assert st["vf_clip_frac"].item() == pytest.approx(0.5)


def test_selective_log_softmax_and_entropy_match_full():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 11, generator=g)
    idx = torch.randint(0, 11, (5, 3), generator=g)
    full = torch.log_softmax(logits, -1)
    torch.testing.assert_close(selective_log_softmax(logits, idx, chunk_rows=2),
                               full.gather(-1, idx[..., None]).squeeze(-1))
    torch.testing.assert_close(entropy_from_logits(logits, chunk_rows=2), -(full.exp() * full).sum(-1))
    uniform = torch.zeros(1, 1, 8)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(8))


def test_policy_loss_registry():
    assert get_policy_loss("clip") is clipped_surrogate_loss
    with pytest.raises(ValueError, match="did you mean `cispo`"):
        get_policy_loss("cispoo")


def test_a_registered_aggregation_is_one_name_everywhere():
    """A user's aggregation works through aggregate() and in GRPOConfig (no other list to edit), and
    a shared per-step normalizer makes accumulated micro-batches equal the whole batch."""
    from trainers.config import GRPOConfig
    from trainers.losses import AGGREGATIONS, Aggregation, register_aggregation

    register_aggregation("seq-sum-test", Aggregation(lambda loss, mask: masked_sum(loss, mask),
                                                     lambda mask, _: (mask.sum(-1) > 0).sum().clamp(min=1)))
    try:
        per = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        assert aggregate(per, mask, "seq-sum-test").item() == pytest.approx(10 / 2)
        assert GRPOConfig(loss_agg="seq-sum-test").loss_agg == "seq-sum-test"
        for mode in AGGREGATIONS.names():
            total = AGGREGATIONS.get(mode).denominator(mask, 3)
            parts = sum(aggregate(per[i:i + 1], mask[i:i + 1], mode, max_length=3, normalizer=total) for i in range(2))
            assert parts.item() == pytest.approx(aggregate(per, mask, mode, max_length=3).item()), mode
    finally:
        AGGREGATIONS.unregister("seq-sum-test")
    with pytest.raises(ValueError, match="loss_agg: unknown loss aggregation `seq-sum-test`"):
        GRPOConfig(loss_agg="seq-sum-test")


def test_options_are_bound_from_the_config_by_name():
    """A registered loss declares its options as keyword-only parameters: the trainer fills them from
    the config's *_kwargs, else the config field of that name, else the default."""
    from trainers.config import GRPOConfig
    from trainers.losses import POLICY_LOSSES
    from trainers.registry import bind_options

    seen = {}

    @register_policy_loss("scaled-pg-test")
    def scaled_pg(logprobs, old_logprobs, advantages, mask, *, scale: float = 1.0, epsilon_low: float = 0.0,
                  config=None):
        seen.update(scale=scale, epsilon_low=epsilon_low, config=config)
        return -scale * advantages.unsqueeze(-1) * logprobs, {}

    try:
        cfg = GRPOConfig(policy_loss="scaled-pg-test", policy_loss_kwargs={"scale": 3.0}, epsilon_low=0.1)
        fn = get_policy_loss(cfg.policy_loss)
        loss, _ = fn(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2),
                     **bind_options(fn, cfg, cfg.policy_loss_kwargs))
        assert seen == {"scale": 3.0, "epsilon_low": 0.1, "config": cfg}
        assert "scale" not in bind_options(fn, GRPOConfig(policy_loss="scaled-pg-test"))  # its default applies
        with pytest.raises(ValueError, match=r"policy_loss_kwargs: policy loss `scaled-pg-test` has no option "
                                             r"`scal` — did you mean `scale`\?"):
            GRPOConfig(policy_loss="scaled-pg-test", policy_loss_kwargs={"scal": 3.0})
    finally:
        POLICY_LOSSES.unregister("scaled-pg-test")

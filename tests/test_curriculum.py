"""Curriculum: level raised on a fake pass-rate sequence, the env's difficulty really changes, the
spec validates it, and an online trainer rebuilds its env when the level rises."""

from __future__ import annotations

import pytest
import torch

import rlenv
from rlenv.batch import RolloutBatch
from rlenv.curriculum import Curriculum
from rlenv.runspec import SpecError, parse_spec


def make(**kw) -> Curriculum:
    return Curriculum("arithmetic-v0", **{"knob": "difficulty", "levels": [0, 1, 2], "raise_at": 0.8,
                                          "window": 3, "env_kwargs": {"digits": 2, "operators": "+-"}, **kw})


def test_raises_only_when_window_mean_reaches_threshold():
    cur = make()
    # window not full, then mean below 0.8, then a full window at >= 0.8 → level 1
    seq = [0.9, 0.9, 0.5, 0.9, 0.9, 0.8]
    raised = [cur.observe(p) for p in seq]
    assert raised == [False, False, False, False, False, True]
    assert cur.level == 1
    # the window starts over at the new level: two good rollouts are not enough
    assert [cur.observe(p) for p in (1.0, 1.0)] == [False, False]
    assert cur.observe(1.0) is True and cur.level == 2 and cur.at_last_level
    # the last level stays
    assert [cur.observe(1.0) for _ in range(5)] == [False] * 5 and cur.level == 2


def test_state_roundtrip():
    cur = make()
    cur.observe(0.9)
    cur.observe(0.95)
    other = make()
    other.load_state_dict(cur.state_dict())
    assert other.observe(0.9) is True and other.level == 1


def test_env_difficulty_actually_changes():
    cur = make()
    levels = []
    for _ in range(3):
        env = cur.make_env()
        assert env.spec.kwargs["difficulty"] == cur.level
        assert {_task(env, s).info["difficulty"] for s in range(20)} == {cur.level}
        levels.append(cur.level)
        for _ in range(cur.window):
            cur.observe(1.0)
    assert levels == [0, 1, 2]
    # difficulty 0 keeps operands in the lower half; difficulty 2 allows negative results
    easy = Curriculum("arithmetic-v0", "difficulty", [0, 2], env_kwargs={"digits": 2, "operators": "-"})
    results0 = [int(_task(easy.make_env(), s).answer) for s in range(100)]
    for _ in range(easy.window):
        easy.observe(1.0)
    results2 = [int(_task(easy.make_env(), s).answer) for s in range(100)]
    assert min(results0) >= 0 and max(results0) <= 49
    assert min(results2) < 0


def _task(env, seed):
    return env.reset(seed=seed)[1]["task"]


@pytest.mark.parametrize("kw, field", [
    ({"levels": [0]}, "levels"), ({"raise_at": 0.0}, "raise_at"), ({"raise_at": 1.5}, "raise_at"),
    ({"window": 0}, "window"), ({"knob": ""}, "knob"),
    ({"env_kwargs": {"difficulty": 1}}, "knob `difficulty` is also set in env.kwargs"),
])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        make(**kw)


BASE = {"model": "preset:micro", "stages": [{"grpo": {"max_steps": 1}}]}


def test_spec_accepts_and_checks_curriculum():
    spec = parse_spec({**BASE, "env": {"id": "arithmetic-v0", "kwargs": {"digits": 1},
                                       "curriculum": {"knob": "difficulty", "levels": [0, 1, 2], "window": 4}}})
    assert spec.env.curriculum.levels == [0, 1, 2] and spec.env.curriculum.raise_at == 0.8
    bad = [
        ({"knob": "dificulty", "levels": [0, 1]}, "env.curriculum.knob: `arithmetic-v0` has no keyword `dificulty` — did you mean `difficulty`?"),
        ({"knob": "difficulty", "levels": [0]}, "env.curriculum.levels"),
        ({"knob": "difficulty", "levels": [0, 1], "raise_at": 2}, "env.curriculum.raise_at"),
        ({"knob": "difficulty", "levels": [0, 1], "windw": 2}, "did you mean `window`"),
    ]
    for cur, msg in bad:
        with pytest.raises(SpecError) as e:
            parse_spec({**BASE, "env": {"id": "arithmetic-v0", "curriculum": cur}})
        assert msg in str(e.value), str(e.value)
    with pytest.raises(SpecError, match="also set in env.kwargs"):
        parse_spec({**BASE, "env": {"id": "arithmetic-v0", "kwargs": {"difficulty": 1},
                                    "curriculum": {"knob": "difficulty", "levels": [0, 1]}}})


class _Recorder:
    """What an online trainer's rollout hook sees, without a model: the real method on a bare object."""

    def __init__(self, cur):
        self.curriculum = cur
        self.env = cur.make_env()
        self._verifiers_replaced = False


def test_online_trainer_rebuilds_env_when_level_rises():
    from trainers.online import OnlineTrainer

    cur = Curriculum("arithmetic-v0", "difficulty", [0, 1], window=2, env_kwargs={"digits": 1})
    holder = _Recorder(cur)
    first_env = holder.env

    def batch(correct):
        n, zeros = len(correct), torch.zeros(len(correct), 2)
        return RolloutBatch(input_ids=zeros.long(), attention_mask=zeros.long() + 1, loss_mask=zeros,
                            sampling_logprobs=zeros, rewards=torch.tensor(correct, dtype=torch.float),
                            group_ids=torch.zeros(n, dtype=torch.long), prompt_lengths=torch.ones(n, dtype=torch.long),
                            completion_lengths=torch.ones(n, dtype=torch.long),
                            failed=torch.zeros(n, dtype=torch.bool), truncated=torch.zeros(n, dtype=torch.bool),
                            correct=torch.tensor(correct, dtype=torch.bool))

    OnlineTrainer._observe_curriculum(holder, batch([1, 1, 1, 0]))
    assert holder.env is first_env
    OnlineTrainer._observe_curriculum(holder, batch([1, 1, 1, 1]))
    assert holder.env is not first_env and holder.env.spec.kwargs["difficulty"] == 1

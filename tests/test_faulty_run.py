"""Faulty verifiers in real runs: the run completes, failures are masked out of the loss and counted
in the metrics, and learning still happens.

1. GRPO on ``arithmetic-v0`` from the pinned start (tests/rl_helpers.py), with the env's
   correctness check wrapped so that 10 % of calls raise and 5 % hang past the per-call limit.
   Every step: failed rows have a zero loss mask, ``failed_verifier_count`` in ``metrics.jsonl``
   equals the step's failed rows, ``valid_frac`` says the rest; across the run, the rubric's
   failure counter holds the raised and the timed-out calls; the greedy pass rate (measured with
   the faults paused) rises.
2. A short GRPO run on ``code-v0`` whose engine output is, for a share of the samples, replaced by
   hostile programs (memory bomb, infinite loop, fork of a sleeper, output flood): the sandbox gives
   each its status within its limits and the run completes.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time

import pytest

from tests.rl_helpers import eval_pass_rates, make_env, one_thread, rl_start  # noqa: F401
from trainers.config import GRPOConfig
from trainers.grpo import GRPOTrainer
from trainers.metrics_log import read_metrics
from verifiers.rubric import Component, Rubric

RAISE_P, HANG_P = 0.10, 0.05
CALL_LIMIT_S = 1.0  # per-call verifier limit in the faulty run; a hang sleeps longer than this
HANG_S = 3.0


class FaultyVerifier:
    """The env's real correctness check, except that a seeded share of calls raise or hang.

    Which calls fail is a function of (seed, task, completion, how often that pair was seen), not of
    the order the verifier threads happen to run in, so a run's faults are the same every time."""

    def __init__(self, check, seed: int = 0):
        self.check = check
        self.seed = seed
        self.lock = threading.Lock()
        self.paused = False  # evaluation measures the policy, not the faults
        self.raised = self.hung = self.calls = 0
        self.seen: collections.Counter = collections.Counter()

    def _draw(self, completion, task) -> float:
        key = (getattr(task, "id", None), str(completion))
        with self.lock:
            self.seen[key] += 1
            k = self.seen[key]
        digest = hashlib.sha256(repr((self.seed, key, k)).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def __call__(self, completion, task):
        u = 1.0 if self.paused else self._draw(completion, task)
        with self.lock:
            self.calls += 0 if self.paused else 1
            if u < RAISE_P:
                self.raised += 1
            elif u < RAISE_P + HANG_P:
                self.hung += 1
        if u < RAISE_P:
            raise RuntimeError("verifier crashed (injected)")
        if u < RAISE_P + HANG_P:
            time.sleep(HANG_S)
        return self.check(completion, task)


class ProbedGRPO(GRPOTrainer):
    """GRPO that records, per step, the failed rows and their loss mask, and pauses the faults
    (the :class:`FaultyVerifier` in its env's rubric) while it evaluates."""

    def setup(self):
        super().setup()
        self.probes = []
        self.faults = next(c.verifier for c in self.env.unwrapped.rubric.components
                           if isinstance(c.verifier, FaultyVerifier))

    def make_step_data(self):
        data = super().make_step_data()
        failed = data.batch.failed.bool()
        self.probes.append({"step": self.global_step + 1, "rows": len(failed), "failed": int(failed.sum()),
                            "masked_tokens_of_failed": float(data.per_token["mask"][failed].sum()),
                            "tokens_of_valid": float(data.per_token["mask"][~failed].sum())})
        return data

    def evaluate(self):
        self.faults.paused = True
        try:
            return super().evaluate()
        finally:
            self.faults.paused = False


#: what the learning part requires of the greedy pass rate (128 held-out tasks); see the docstring
FAULTY_MIN_GAIN, FAULTY_MIN_END = 0.10, 0.85


def learn(start: str, out, seed: int = 0, fused_adamw=None, **overrides) -> dict:
    """The test's core: test_grpo.py's learning run with the faulty verifier in the env's rubric;
    returns ``train()``'s result plus the ``trainer``, the ``faults`` and the ``env``."""
    from tasks.arithmetic import correct
    from tests.test_grpo import learn as grpo_learn

    faults = FaultyVerifier(correct, seed=seed)
    env = make_env()
    env.unwrapped.rubric = Rubric([Component(faults, 1.0, name="correct", timeout=CALL_LIMIT_S)])
    result = grpo_learn(start, out, seed, fused_adamw, trainer_class=ProbedGRPO, env=env, **overrides)
    return dict(result, faults=faults, env=env)


@pytest.mark.slow
def test_grpo_with_raising_and_hanging_verifiers(rl_start, tmp_path):  # noqa: F811
    """GRPO with 10 % of verifier calls raising and 5 % hanging: failures masked and counted, and the
    policy still learns from the valid rows.

    Spread (tests/measure_learning_spread.py): SPREAD."""
    from tests.rl_helpers import check_start, fused_adamw

    result = learn(rl_start, tmp_path, seed=0, fused_adamw=fused_adamw())
    trainer, faults, env = result["trainer"], result["faults"], result["env"]
    steps = trainer.config.max_steps
    assert result["steps"] == steps and not result["stopped_early"]

    # masked out of the loss: failed rows contribute no token to any loss term
    rows = sum(p["rows"] for p in trainer.probes)
    failed = sum(p["failed"] for p in trainer.probes)
    assert all(p["masked_tokens_of_failed"] == 0.0 for p in trainer.probes)
    assert all(p["tokens_of_valid"] > 0 for p in trainer.probes)
    # counted: per step in metrics.jsonl, and by kind in the rubric's failure counter
    train = {m["step"]: m for m in read_metrics(tmp_path / "metrics.jsonl") if "failed_verifier_count" in m}
    assert sorted(train) == list(range(1, steps + 1))
    for p in trainer.probes:
        m = train[p["step"]]
        assert m["failed_verifier_count"] == p["failed"]
        assert m["valid_frac"] == pytest.approx(1 - p["failed"] / p["rows"])
        assert all(v is None or v == v for v in m.values())  # no NaN reached the log
    counts = env.unwrapped.rubric.failures.counts()
    assert counts.get(("correct", "exception"), 0) == faults.raised
    # hangs time out; under heavy load a slow healthy call may time out too, never fewer
    assert counts.get(("correct", "timeout"), 0) >= faults.hung
    assert failed == faults.raised + counts.get(("correct", "timeout"), 0)
    assert 0.08 <= failed / rows <= 0.35, (failed, rows)
    # and the policy still learned from the valid rows
    before, after = eval_pass_rates(result)
    print(f"faulty-verifier GRPO pass rate {before:.3f} -> {after:.3f}; failed {failed}/{rows} "
          f"(raised {faults.raised}, hung {faults.hung})")
    check_start(before)
    assert after - before >= FAULTY_MIN_GAIN and after >= FAULTY_MIN_END, (before, after)


# -- the code sandbox inside a run ------------------------------------------------------------------
HOSTILE = {  # top-level code: it runs whatever the task's entry point is
    "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 26))\n",
    "infinite_loop": "while True:\n    pass\n",
    "output_flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "fork_sleeper": "import os, time\nif os.fork() == 0:\n    time.sleep(1000)\nwhile True:\n    pass\n",
}


class HostileEngine:
    """Delegates to the real engine, then swaps every other completion's text for a hostile program
    (its token ids and log-probs stay the sampled ones: the policy trains on what it sampled)."""

    def __init__(self, inner):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.swapped: list = []
        self.k = 0  # completions seen, across calls (the rollout generates in chunks)

    def generate(self, prompts, params):
        out = self.inner.generate(prompts, params)
        for group in out:
            for c in group:
                if self.k % 2 == 0:
                    kind = sorted(HOSTILE)[(self.k // 2) % len(HOSTILE)]
                    c.text = f"```python\n{HOSTILE[kind]}```"
                    self.swapped.append(kind)
                self.k += 1
        return out

    def sync_weights(self, model, adapter_only=False):
        self.inner.sync_weights(model, adapter_only=adapter_only)

    def close(self):
        self.inner.close()


class RecordingVerifier:
    """The real code verifier; remembers each hostile sample's sandbox statuses."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: list = []
        self.lock = threading.Lock()

    def __call__(self, completion, task):
        t0 = time.monotonic()
        result = self.inner.score(completion, task)
        kind = next((k for k, src in HOSTILE.items() if str(completion) == f"```python\n{src}```"), None)
        if kind is not None:
            with self.lock:
                self.seen.append((kind, result.details.get("statuses", []), result.reward, time.monotonic() - t0))
        return result


class HostileGRPO(GRPOTrainer):
    @property
    def engine(self):
        if not isinstance(self._engine, HostileEngine):
            self._engine = HostileEngine(GRPOTrainer.engine.fget(self))
        return self._engine


@pytest.mark.slow
def test_grpo_on_code_with_memory_bombs_and_infinite_loops(micro_model_dir, tmp_path):
    import rlenv
    from verifiers.code import CodeVerifier

    limit_s, memory_mb = 2.0, 256
    recorder = RecordingVerifier(CodeVerifier(timeout=limit_s, memory_mb=memory_mb))
    env = rlenv.make("code-v0")
    env.unwrapped.rubric = Rubric([Component(recorder, 1.0, name="tests", timeout=120.0)])
    cfg = GRPOConfig(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-4, num_prompts_per_step=2, group_size=4,
                     max_new_tokens=8, beta=0.0, report_to="none", progress_bar=False, eval_num_tasks=0, seed=0)
    with one_thread():
        trainer = HostileGRPO(micro_model_dir, env, cfg)
        result = trainer.train()
    assert result["steps"] == 2 and not result["stopped_early"]
    metrics = [m for m in read_metrics(tmp_path / "metrics.jsonl") if "loss" in m]
    assert len(metrics) == 2 and all(m["loss"] == m["loss"] for m in metrics)
    assert sorted(set(trainer.engine.swapped)) == sorted(HOSTILE)
    kinds = {k for k, *_ in recorder.seen}
    assert kinds == set(HOSTILE), kinds
    for kind, statuses, reward, _ in recorder.seen:
        assert reward == 0.0 and statuses, (kind, statuses)
        if kind == "memory_bomb":
            assert set(statuses) <= {"memory", "error"}, statuses
        elif kind in ("infinite_loop", "fork_sleeper", "output_flood"):
            assert set(statuses) <= {"timeout", "killed", "memory", "error"} and "ok" not in statuses, statuses
    # the sandbox was reached (statuses are its verdicts), and the failures did not fail the run
    assert any("timeout" in s for k, s, *_ in recorder.seen if k == "infinite_loop")

"""Fault isolation: a verifier that raises or hangs costs its own samples, never the batch."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

import verifiers
from rlenv.core import Task
from verifiers import Component, Rubric
from verifiers.isolation import FAILURES, Call, FailureCounter, ThreadRunner, WorkerPool, call_verifier


def exact(completion, task):
    return float(completion.strip() == task.answer)


def raises_on_13(completion, task):
    if task.answer == "13":
        raise ZeroDivisionError("boom on 13")
    return 1.0


def sleeps_on_42(completion, task):
    if task.answer == "42":
        time.sleep(10_000)  # "forever": far beyond any limit in this file
    return 1.0


def spin_forever(completion, task):
    """CPU-bound and GIL-holding in spirit: only a killable process stops it."""
    while True:
        pass


def exit_worker(completion, task):
    os._exit(3)


def test_batch_of_1000_with_a_raiser_and_a_sleeper():
    # the done-when: both fail, everything else is scored right, the batch returns within its limit
    tasks = [Task(f"q{i}", str(i)) for i in range(1000)]
    completions = [str(i) if i % 3 else "wrong" for i in range(1000)]
    rubric = Rubric([Component(exact, 1.0), Component(raises_on_13, 0.5), Component(sleeps_on_42, 0.5, timeout=1.0)],
                    batch_timeout=20.0)
    before = FAILURES.total
    t0 = time.monotonic()
    results = rubric.score_batch(completions, tasks)
    elapsed = time.monotonic() - t0
    assert elapsed < 20.0  # its limit (in practice ≈ the 1 s per-call limit of the sleeper)
    assert len(results) == 1000
    failed = [i for i, r in enumerate(results) if r.failed]
    assert failed == [13, 42]
    assert results[13].verdicts["raises_on_13"] == "failed"
    assert "ZeroDivisionError: boom on 13" in results[13].details["raises_on_13"]["error"]
    assert results[42].verdicts["sleeps_on_42"] == "failed"
    assert results[42].details["sleeps_on_42"]["failure"] == "timeout"
    for i, r in enumerate(results):
        if i in (13, 42):
            continue
        want = 1.0 if i % 3 else 0.0
        assert r.components["exact"] == want
        assert r.reward == pytest.approx(want + 1.0)
        assert r.correct == (want == 1.0)
    # the failed samples still carry the scores that did come back (logged, not rewarded)
    assert results[42].components == {"exact": 0.0, "raises_on_13": 1.0, "sleeps_on_42": 0.0}
    assert rubric.failures.counts() == {("raises_on_13", "exception"): 1, ("sleeps_on_42", "timeout"): 1}
    assert FAILURES.total - before == 2


def test_failure_is_logged_once_and_counted_each_time(caplog):
    def always_broken(completion, task):
        raise RuntimeError("the grader's database is down")

    rubric = Rubric([always_broken])
    with caplog.at_level(logging.WARNING, logger="verifiers"):
        for _ in range(3):
            res = rubric.score_batch(["a", "b"], [Task("q", "a"), Task("q", "b")])
            assert all(r.failed and r.reward == 0.0 for r in res)
    logged = [r for r in caplog.records if "database is down" in r.getMessage()]
    assert len(logged) == 1
    assert "always_broken" in logged[0].getMessage()
    assert rubric.failures.metrics() == {"verifier_failures/always_broken": 6, "verifier_failures/total": 6}


def test_failed_is_distinct_from_a_real_zero():
    rubric = Rubric([exact])
    real_zero = rubric.score("nope", Task("q", "1"))
    assert real_zero.reward == 0.0 and not real_zero.failed and real_zero.verdicts["exact"] == "incorrect"
    broken = Rubric([raises_on_13]).score("x", Task("q", "13"))
    assert broken.reward == 0.0 and broken.failed and broken.verdicts["raises_on_13"] == "failed"


def test_time_limit_works_from_a_non_main_thread():
    # signal.alarm cannot do this: the call comes from a worker thread
    out = {}

    def worker():
        out["r"] = call_verifier(sleeps_on_42, "x", Task("q", "42"), timeout=0.3)

    th = threading.Thread(target=worker)
    t0 = time.monotonic()
    th.start()
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t0 < 5
    assert out["r"].failed and out["r"].details["failure"] == "timeout"


def test_hung_threads_are_replaced_so_the_pool_keeps_working():
    runner = ThreadRunner(workers=2)
    hung = [Call(time.sleep, (10_000,), timeout=0.2) for _ in range(2)]  # both workers get stuck
    runner.run(hung)
    assert all(not c.ok and c.kind == "timeout" for c in hung)
    assert runner.abandoned == 2 and runner.stuck == 2
    quick = [Call(pow, (i, 2), timeout=5) for i in range(50)]
    t0 = time.monotonic()
    runner.run(quick)
    assert time.monotonic() - t0 < 5
    assert [c.value for c in quick] == [i * i for i in range(50)]


def test_a_late_return_after_timeout_is_discarded_and_its_thread_retires():
    runner = ThreadRunner(workers=1)
    late = Call(lambda: time.sleep(0.4) or 1.0, (), timeout=0.1)
    runner.run([late])
    assert not late.ok and late.kind == "timeout" and runner.stuck == 1
    deadline = time.monotonic() + 10
    while runner.stuck and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.stuck == 0 and late.value is None and not late.ok  # the late 1.0 never counts


def test_batch_deadline_fails_unstarted_calls():
    runner = ThreadRunner(workers=1)
    calls = [Call(time.sleep, (0.2,), timeout=None) for _ in range(20)]
    t0 = time.monotonic()
    runner.run(calls, deadline=0.5)
    assert time.monotonic() - t0 < 3
    assert sum(c.ok for c in calls) < 20
    assert all(c.kind == "timeout" for c in calls if not c.ok)


def test_process_isolation_kills_a_spinning_verifier_and_recovers():
    runner = WorkerPool(workers=1)
    try:
        assert runner.call(exact, ("3", Task("q", "3")), 60) == 1.0  # worker start can be slow
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            runner.call(spin_forever, ("x", None), 0.5)
        assert time.monotonic() - t0 < 10
        assert runner.killed == 1
        with pytest.raises(RuntimeError, match="died"):
            runner.call(exit_worker, ("x", None), 30)
        with pytest.raises(RuntimeError, match="ZeroDivisionError: boom on 13"):
            runner.call(raises_on_13, ("x", Task("q", "13")), 30)
        assert runner.call(exact, ("4", Task("q", "4")), 60) == 1.0  # a fresh worker took over
    finally:
        runner.close()


def test_heavy_component_runs_in_a_process_inside_a_rubric():
    rubric = Rubric([Component(exact, 1.0), Component(spin_forever, 0.0, isolation="process", timeout=0.5)])
    t0 = time.monotonic()
    res = rubric.score_batch(["1", "2"], [Task("q", "1"), Task("q", "3")])
    assert time.monotonic() - t0 < 30
    assert [r.reward for r in res] == [1.0, 0.0]
    assert all(r.verdicts["spin_forever"] == "failed" for r in res)
    assert not any(r.failed for r in res)  # weight 0: logged, and its failure does not mask the sample


def test_unpicklable_heavy_verifier_is_refused_up_front():
    with pytest.raises(TypeError, match="cannot be pickled for process isolation"):
        Component(lambda c, t: 1.0, name="anon", isolation="process")


def test_async_verifier_timeout_and_result():
    import asyncio

    async def slow_async(completion, task):
        await asyncio.sleep(0.01 if task.answer != "slow" else 10_000)
        return float(completion == task.answer)

    rubric = Rubric([Component(slow_async, timeout=0.5)])
    res = rubric.score_batch(["a", "b", "slow"], [Task("q", "a"), Task("q", "x"), Task("q", "slow")])
    assert [r.reward for r in res] == [1.0, 0.0, 0.0]
    assert [r.failed for r in res] == [False, False, True]


def test_bad_return_value_is_a_failure_not_a_zero():
    def returns_text(completion, task):
        return "yes"

    def returns_nan(completion, task):
        return float("nan")

    r = Rubric([returns_text, returns_nan]).score("a", Task("q", "a"))
    assert r.failed
    assert "expected a number" in r.details["returns_text"]["error"]
    assert "NaN" in r.details["returns_nan"]["error"]


def test_failure_counter_metrics_and_reset():
    c = FailureCounter()
    c.record("m", "timeout", 2)
    c.record("m", "exception")
    c.record("code", "timeout")
    assert c.metrics() == {"verifier_failures/m": 3, "verifier_failures/code": 1, "verifier_failures/total": 4}
    c.reset()
    assert c.total == 0


def test_workers_never_rerun_an_unguarded_script(tmp_path):
    """A user's script without an ``if __name__ == "__main__":`` guard runs once: the worker pool's
    forkserver and workers do not import the main module (multiprocessing's default would re-run
    it, and its nested math comparisons would fail to False). Something defined in the script
    still reaches a worker, which then imports the script itself (the guard applies there)."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text("import sys\nprint('top-level ran', file=sys.stderr)\n"
                      "from verifiers.math import is_equivalent\n"
                      "print(is_equivalent('[1,2)', '1\\\\le x<2'), is_equivalent('x+1/2', '0.5+x'))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"] and out.stderr.count("top-level ran") == 1, (out.stdout, out.stderr)

    guarded = tmp_path / "guarded.py"
    guarded.write_text("from verifiers.workers import WorkerPool\n\ndef double(x):\n    return 2 * x\n\n"
                       "if __name__ == '__main__':\n    print(WorkerPool(workers=1).call(double, (21,), timeout=60))\n")
    out = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "42", (out.stdout, out.stderr)

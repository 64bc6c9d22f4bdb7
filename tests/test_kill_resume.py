"""Interrupted runs lose nothing: a real SFT run (micro preset, a checkpoint every step) is SIGKILLed
at seeded random moments — during start-up and resume, mid-step and mid-checkpoint — 20 times in a
row, each time resumed with ``resume_from_checkpoint="latest"``. After every kill:

- every visible ``checkpoint-<step>`` verifies against its manifest (none is half-written, half-
  deleted or corrupt), and the newest one's files load (safetensors, ``torch.load(weights_only)``);
- ``metrics.jsonl`` has only whole lines, steps 1..m with no gap, m ≥ the newest checkpoint's step;
- every logged step equals the uninterrupted reference run's: the loss (same data position, same
  weights and optimizer) and one draw of the python, numpy and torch RNGs (same RNG states).

The last trial runs to the end: all steps and the final weights equal the reference's. SIGTERM and
SIGINT stop a run gracefully: exit status 0, a final checkpoint at the last logged step, the model
exported. Runs are forked from one warm server (tests/kill_resume_worker.py), so a trial costs the
run, not an interpreter start.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from trainers.checkpoint import latest_checkpoint, list_checkpoints, verify_checkpoint

WORKER = Path(__file__).with_name("kill_resume_worker.py")
STEPS = 60  # steps of the run; 36 rows / batch 4 → the run crosses six epochs
MAX_STEPS_PER_TRIAL = 3  # a trial is killed by then at the latest, so 20 trials fit in one run
TRIALS = 20
SLOW_WRITE_S = 0.15  # the child-only sleep inside a checkpoint write (after its files, before the rename)
TIMEOUT_S = 300  # for one forked run; generous: CI's 2 cores may be shared
HOLD_S = TIMEOUT_S  # a trial that kills mid-checkpoint: its child waits inside the write this long


class Server:
    """The fork server, with a reader thread so the test can wait for a line with a deadline."""

    def __init__(self, tmp: Path):
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(tmp / "worker.log", "w"), text=True,
                                     env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def start(self, **req) -> int:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.lines.get(timeout=TIMEOUT_S)
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def exit_status(self, timeout: float = TIMEOUT_S):
        """The run's exit status, or None if it is still running after ``timeout`` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        assert line.startswith("exit "), line
        return int(line.split()[1])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _logged(out: Path) -> list[dict]:
    """metrics.jsonl, asserting that every line is whole JSON and the file ends with a newline."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "metrics.jsonl ends in a torn line"
    return [json.loads(line) for line in text.splitlines()]  # a torn line fails here


def _last_step(out: Path) -> int:
    try:
        return max((r["step"] for r in _logged(out)), default=0)
    except (json.JSONDecodeError, AssertionError):  # being written right now
        return 0


def _matches(record: dict, ref: dict) -> None:
    step = record["step"]
    assert record["loss"] == pytest.approx(ref["loss"], abs=1e-6), f"step {step}: loss differs from the reference"
    for k in ("probe/torch", "probe/python", "probe/numpy"):
        assert record[k] == ref[k], f"step {step}: {k} differs from the reference (RNG state not restored)"


def check_invariants(out: Path, reference: dict) -> int:
    """The checks after an interruption; returns the newest complete checkpoint's step (0: none)."""
    root = out / "checkpoints"
    for ckpt in list_checkpoints(root):  # visible = complete: each one verifies
        verify_checkpoint(ckpt)
    latest = latest_checkpoint(root)
    step = 0
    if latest is not None:
        step = int(latest.name.split("-")[1])
        assert json.loads((latest / "trainer_state.json").read_text())["global_step"] == step
        from safetensors.torch import load_file

        assert load_file(latest / "model" / "model.safetensors")
        for name in ("optimizer.pt", "scheduler.pt", "rng_state_0.pt"):
            torch.load(latest / name, weights_only=True)
    records = _logged(out)
    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(steps) + 1)), f"metrics.jsonl steps have a gap or repeat: {steps}"
    assert len(steps) >= step, f"metrics.jsonl lost steps before checkpoint-{step}"
    for r in records:
        _matches(r, reference[r["step"]])
    return step


def _temp_folders(out: Path) -> set:
    """(name, inode, mtime) of the temp folders of checkpoint writes under way or cut short."""
    found = set()
    for p in (out / "checkpoints").glob(".tmp-checkpoint-*"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        found.add((p.name, st.st_ino, st.st_mtime_ns))
    return found


def _wait_until(cond, running, deadline: float) -> None:
    while time.time() < deadline and running() and not cond():
        time.sleep(0.002)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("kill_resume"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(server, micro_model_dir, tmp_path_factory):
    """The uninterrupted run: step -> its metrics record, and its final weights."""
    out = tmp_path_factory.mktemp("reference")
    server.start(out=str(out), model=micro_model_dir, max_steps=STEPS, save_steps=0, resume=False)
    assert server.exit_status() == 0, (out.parent / "worker.log").read_text()[-3000:]
    records = {r["step"]: r for r in _logged(out)}
    assert sorted(records) == list(range(1, STEPS + 1))
    from safetensors.torch import load_file

    return records, load_file(out / "model" / "model.safetensors")


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(server, reference, micro_model_dir, tmp_path):
    ref, ref_weights = reference
    out = tmp_path / "run"
    rng = random.Random(1234)
    kills, mid_checkpoint, finished = 0, 0, False
    for trial in range(TRIALS):
        before = _temp_folders(out)
        slow = trial % 2 == 1  # every other run writes checkpoints slowly (the child only)
        mode = rng.choice(["startup", "step", "checkpoint"] if slow else ["startup", "step"])
        # a run meant to die inside a checkpoint write holds there until killed: where the kill lands
        # must not depend on how fast a busy CPU lets this thread notice the write
        hold = HOLD_S if mode == "checkpoint" else SLOW_WRITE_S if slow else 0.0
        pid = server.start(out=str(out), model=micro_model_dir, max_steps=STEPS, save_steps=1, slow_write_s=hold)
        status: list = []

        def running():
            if status:
                return False
            s = server.exit_status(timeout=0)
            if s is not None:
                status.append(s)
                return False
            return True

        deadline = time.time() + TIMEOUT_S
        cap = _last_step(out) + MAX_STEPS_PER_TRIAL
        progressed = lambda: _last_step(out) >= cap  # noqa: E731
        if mode == "startup":  # anywhere from fork to the first steps (resume, model load)
            target = time.time() + rng.uniform(0.0, 1.5)
            _wait_until(lambda: time.time() >= target or progressed(), running, deadline)
        elif mode == "step":  # a few steps on, then a random instant inside a step or a save
            goal = _last_step(out) + rng.randint(1, MAX_STEPS_PER_TRIAL)
            _wait_until(lambda: _last_step(out) >= goal, running, deadline)
            time.sleep(rng.uniform(0.0, 0.1))
        else:  # inside a checkpoint write: its temp folder exists, the rename has not happened (held)
            _wait_until(lambda: bool(_temp_folders(out) - before) or progressed(), running, deadline)
            time.sleep(rng.uniform(0.0, SLOW_WRITE_S))
        if running():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now
                pass
            status.append(server.exit_status())
        if status[0] == -signal.SIGKILL:
            kills += 1
            mid_checkpoint += bool(_temp_folders(out) - before)  # this run's save was cut
        else:
            assert status[0] == 0, (tmp_path.parent / "worker.log").read_text()[-3000:]
            finished = True
        check_invariants(out, ref)
        if finished:
            break
    assert kills >= TRIALS - 1 or finished, kills
    # the last run goes to the end
    if not finished:
        server.start(out=str(out), model=micro_model_dir, max_steps=STEPS, save_steps=1)
        assert server.exit_status() == 0
    assert check_invariants(out, ref) == STEPS
    assert len(_logged(out)) == STEPS
    from safetensors.torch import load_file

    weights = load_file(out / "model" / "model.safetensors")
    for k, v in ref_weights.items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=1e-6)
    # interrupted saves leave nothing behind once the run has saved again
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    print(f"kills={kills} mid_checkpoint={mid_checkpoint}")
    assert kills >= 15, f"only {kills} of {TRIALS} trials were killed mid-run; the run was too short"
    assert mid_checkpoint >= 5, f"only {mid_checkpoint} kills landed inside a checkpoint write"  # 5 held trials


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_gracefully(sig, server, reference, micro_model_dir, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    pid = server.start(out=str(out), model=micro_model_dir, max_steps=STEPS, save_steps=10)
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and _last_step(out) < 2:
        time.sleep(0.01)
    os.kill(pid, sig)
    assert server.exit_status() == 0, "a graceful stop exits normally"
    stopped_at = check_invariants(out, ref)
    assert 2 <= stopped_at < STEPS
    assert len(_logged(out)) == stopped_at, "the final checkpoint is at the last logged step"
    assert (out / "model" / "model.safetensors").exists()
    # and the run resumes from there to the reference's end
    server.start(out=str(out), model=micro_model_dir, max_steps=STEPS, save_steps=10)
    assert server.exit_status() == 0
    assert check_invariants(out, ref) == STEPS

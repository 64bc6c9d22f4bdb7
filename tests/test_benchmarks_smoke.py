"""CI-sized runs of the two framework benchmarks (ours next to TRL's GRPOTrainer) as subprocesses:
each prints its table and ends with a ``summary:`` line holding a numeric ``speedup``. Timings are
not asserted (they belong to the full runs, see docs/performance.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: int = 600) -> str:
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _summary(out: str) -> dict:
    last = out.strip().splitlines()[-1]
    assert last.startswith("summary: "), out
    fields = dict(kv.split("=", 1) for kv in last[len("summary: "):].split())
    assert re.fullmatch(r"[0-9.e+-]+", fields["speedup"]) and float(fields["speedup"]) > 0, fields
    return fields


def test_grpo_vs_trl_smoke():
    out = _run("grpo_vs_trl.py", "--prompts", "2", "--group", "2", "--new-tokens", "4", "--steps", "1",
               "--warmup", "0", "--rounds", "1")
    assert "TRL 1.16 GRPOTrainer" in out and "rlenv GRPOTrainer" in out and "ratio TRL/ours" in out
    fields = _summary(out)
    assert float(fields["ours_step_s"]) > 0 and float(fields["trl_step_s"]) > 0
    assert float(fields["ours_peak_gib"]) > 0 and float(fields["trl_peak_gib"]) > 0


def test_time_to_accuracy_smoke(tmp_path):
    # an SFT start of 25 steps (target 0), one GRPO step per side, a target no run reaches
    out = _run("time_to_accuracy.py", "--seeds", "1", "--sft-target", "0", "--target", "1.01", "--eval-tasks", "8",
               "--eval-every", "1", "--max-steps", "1", "--prompts", "2", "--group", "2", "--new-tokens", "4",
               "--cache", str(tmp_path))
    assert "ratio of medians TRL/ours" in out and "(0/1 reached the target)" in out
    fields = _summary(out)
    assert fields["ours_reached"] == "0" and fields["trl_reached"] == "0"

"""``benchmarks/gpu_check.sh --dry-run``: the device script's code paths at tiny shapes on CPU, so
the one prepared GPU run does not die of a typo, a missing import or a changed signature.

It checks what the dry run can check: every phase ran and exited 0; the GPU tests were collected and
skipped cleanly (no CUDA here); each benchmark ended with its ``summary:`` line, with the fields the
final table reads; the preflight imported everything with the packages the device lacks hidden; the
table was written. Timings are not asserted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("trl")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    env.pop("RLENV_STRICT_CUDA_GRAPH", None)
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    log = (tmp_path / "log.txt").read_text() if (tmp_path / "log.txt").exists() else ""
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:] + log[-2000:]

    summary = (tmp_path / "summary.txt").read_text().splitlines()
    lines = [dict(kv.split("=", 1) for kv in line.split()) for line in summary]
    status = {d["phase"]: d for d in lines if "status" in d}
    assert set(status) == {"preflight", "gpu_tests", "generation", "grpo_mixed"}
    assert all(d["status"] == "ok" for d in status.values()), status
    assert status["preflight"]["imports"] == "OK"

    tests = [d for d in lines if "file" in d]
    assert {d["file"] for d in tests} == {p.name for p in (ROOT / "tests").glob("test_gpu_*.py")}
    for d in tests:  # collected, and all skipped without CUDA (none errored at import or collection)
        assert int(d["skipped"]) > 0 and d["passed"] == d["failed"] == d["errors"] == "0", d

    # generation prints a partial summary before its static-cache reference, then the full one: the last wins
    gen = [d for d in lines if d["phase"] == "generation" and "speedup" in d][-1]
    assert "partial" not in gen, gen
    assert float(gen["ours_tok_s"]) > 0 and float(gen["hf_generate_tok_s"]) > 0 and float(gen["hf_static_tok_s"]) > 0
    grpo = next(d for d in lines if d["phase"] == "grpo_mixed" and "speedup" in d)
    assert grpo["precision"] == "mixed" and grpo["model"] == "mini"
    for key in ("ours_step_s", "trl_step_s", "ours_peak_gib", "trl_peak_gib", "ours_mfu", "peak_tflops"):
        assert float(grpo[key]) > 0, key

    table = (tmp_path / "table.txt").read_text()
    assert "all phases ran" in table and "vs generate static cache" in table and "training MFU" in table

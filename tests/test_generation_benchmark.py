"""Smoke test of benchmarks/generation.py with tiny settings (the numbers are not asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
import pytest

pytestmark = pytest.mark.usefixtures("single_thread")


def test_generation_benchmark_runs_and_prints_a_summary(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generation.py"
    spec = importlib.util.spec_from_file_location("bench_generation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--size", "micro", "--batch", "4", "--group", "2", "--new-tokens", "6",
                      "--prompt-len", "8", "--repeats", "1", "--bandwidth-gbs", "10"])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("summary: ") and "speedup=" in last and "bound_tok_s=" in last
    assert "transformers generate (dynamic cache)" in out and "rlenv HFEngine" in out
    assert res["ours_tok_s"] > 0 and res["hf_generate_tok_s"] > 0
    assert res["speedup"] == res["ours_tok_s"] / res["hf_generate_tok_s"]

"""trainers.plotting: the per-stage and whole-run figures from logged metrics (no training needed)."""

from __future__ import annotations

import pytest

from trainers.plotting import headline, plot_run, plot_stage, rolling_mean

pytest.importorskip("matplotlib")


def _sft(steps: int = 40) -> list[dict]:
    rows = [{"step": s, "loss": 3.0 / (1 + s), "token_accuracy": min(1.0, s / 20)} for s in range(1, steps + 1)]
    rows += [{"step": s, "eval/pass_rate": 0.002 * s, "eval/completion_len": 12 - s / 10,
              "eval/truncation_rate": max(0.0, 1 - s / 20)} for s in (0, 20, 40)]
    return sorted(rows, key=lambda r: r["step"])


def _grpo(steps: int = 60) -> list[dict]:
    rows = [{"step": s, "reward": s / 100, "pass_rate": s / 100, "completion_len_mean": 9.5,
             "truncation_rate": 0.01} for s in range(1, steps + 1)]
    rows += [{"step": s, "eval/pass_rate": 0.1 + s / 100} for s in (0, 30, 60)]
    return sorted(rows, key=lambda r: r["step"])


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rolling_mean_is_a_trailing_mean():
    assert rolling_mean([1, 2, 3, 4], 2) == [1.0, 1.5, 2.5, 3.5]
    assert rolling_mean([], 3) == []


def test_stage_figure_draws_what_was_logged(tmp_path):
    out = plot_stage(_grpo(), tmp_path / "curves.png", title="GRPOTrainer")
    assert out == tmp_path / "curves.png" and _png(out)
    assert not list(tmp_path.glob("*.tmp.png"))  # drawn to a temp file, renamed into place
    assert plot_stage([{"step": 1, "unknown_metric": 1.0}], tmp_path / "none.png") is None
    assert _png(plot_stage(_grpo(), tmp_path / "keys.png", keys=["reward"]))


def test_run_figure_spans_every_stage(tmp_path):
    out = plot_run([("sft", _sft()), ("grpo", _grpo())], tmp_path / "run.png", title="demo")
    assert _png(out) and out.stat().st_size > 20_000  # four panels, not an empty canvas
    assert plot_run([], tmp_path / "empty.png") is None


def test_headline_tells_the_pass_rate_story():
    results = [{"kind": "sft", "metric": "pass_rate", "before": 0.0, "after": 0.06},
               {"kind": "grpo", "metric": "pass_rate", "before": 0.06, "after": 0.81}]
    assert headline("demo", results) == "demo: greedy pass rate 0% → 6% (sft) → 81% (grpo)"
    assert headline("rm only", [{"kind": "rm", "metric": "accuracy", "before": 0.5, "after": 0.9}]) == "rm only"

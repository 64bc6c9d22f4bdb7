"""The README's first command end to end: ``rlenv train examples/arithmetic_sft_grpo.yaml`` on CPU.

One run per session, shared with tests/test_examples.py (built once under a file lock, whichever
xdist worker asks first: tests/shared_dir.py). SFT on noisy labels (95 % off by one) must leave a model that answers one too
high and almost never right; GRPO, rewarded by the verifier alone, must then raise the greedy pass
rate far above that start, while the same stage on coin-flip rewards must not. Then the run's
artifacts, and ``rlenv eval`` on the exported model.

Measured spread (greedy pass rate on 128 held-out problems; benchmarks/demo_control.py and
docs/performance.md have the full tables):

    seed / threads          SFT     GRPO (60 steps)   same stage, coin-flip rewards
    0, 1, 2 / default (2)   0.0 %   86.7, 100, 90.6 %  0.0 %
    0, 1, 2 / 1             0.0 %   86.7, 100, 90.6 %  0.0 % (8 runs: seeds 1-5, shuffled 1-2)
    0 / ATEN default, avx2  0.0 %   95.3, 86.7 %       0.0 % (shuffled; coin flips)
    lr 1.5e-5 (seeds 0-2):  99.2-100 %; its controls 0-7.0 % (one of 11 above 5 points)

so the assertions below (SFT ≤ 10 %, off by one on ≥ 50 % of problems; GRPO ≥ +50 points and
≥ 60 %; the control within 5 points of its start) leave 25 points or more on every measured real
run, and the control's bound is the issue's (every control at the spec's 1e-5 ended at its start).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlenv.cli import main
from tests.shared_dir import built_once

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "arithmetic_sft_grpo.yaml"
#: SFT on noisy labels ends at most this right (it learned the labels' error)...
SFT_MAX = 0.10
#: ...and one too high on at least this share of the held-out problems
SFT_OFF_BY_ONE_MIN = 0.5
#: GRPO must add at least this much greedy pass rate and end at least this high
MIN_RISE, MIN_END = 0.50, 0.60
#: the same stage on rewards that say nothing may move the pass rate at most this far
CONTROL_MAX_MOVE = 0.05


def run_demo(tmp_path_factory, tiny_model_dir: str) -> tuple[Path, list]:
    """Run the demo spec once per session, whichever xdist worker asks first (its own model dir, no
    ~/.cache); returns (output dir, results)."""
    from trainers.pipeline import run_spec

    with built_once(tmp_path_factory, "demo_arithmetic_sft_grpo") as out:
        done = out / "results.json"
        if not done.exists():
            results = run_spec(str(DEMO), [f"model={tiny_model_dir}", f"output_dir={out}",
                                           "logging.report_to=tensorboard"], print_summary=True)
            done.write_text(json.dumps(results, default=str))
        return out, json.loads(done.read_text())


def off_by_one_share(samples_path: Path, step: int) -> float:
    """Share of the eval samples of ``step`` whose tagged answer is the true result + 1."""
    hits = []
    for line in samples_path.read_text().splitlines():
        s = json.loads(line)
        if s["step"] != step:
            continue
        question = s["prompt"][-1]["content"] if isinstance(s["prompt"], list) else s["prompt"]
        a, b = map(int, re.findall(r"\d+", question)[:2])
        got = re.search(r"<a>\s*(-?\d+)\s*</a>", s["completion"] or "")
        hits.append(got is not None and int(got.group(1)) == a + b + 1)
    return sum(hits) / len(hits)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir, single_thread):
    return run_demo(tmp_path_factory, tiny_model_dir)


@pytest.mark.slow
def test_grpo_raises_the_pass_rate_from_the_verifier_alone(demo):
    out, results = demo
    sft, grpo = results
    assert sft["kind"] == "sft" and grpo["kind"] == "grpo"
    # SFT learned addition *and* the labels' error: nearly never right, mostly one too high
    assert sft["before"] == 0.0 and sft["after"] <= SFT_MAX, sft
    assert off_by_one_share(out / "0-sft" / "samples.jsonl", sft["steps"]) >= SFT_OFF_BY_ONE_MIN
    assert grpo["before"] == pytest.approx(sft["after"])  # same model, same eval tasks
    assert grpo["after"] >= grpo["before"] + MIN_RISE and grpo["after"] >= MIN_END, (grpo["before"], grpo["after"])


@pytest.mark.slow
def test_the_same_stage_on_coin_flip_rewards_does_not_learn(demo, tmp_path):
    """The control: the demo's GRPO stage as written, from its SFT model, with each completion's
    reward a fair coin instead of the verifier's verdict. Same prompts, steps and optimiser; its
    greedy pass rate (judged against the true answers) stays at the start, so the real run's gain
    is the verifier's."""
    import sys

    import rlenv
    from rlenv.runspec import load_spec

    sys.path.insert(0, str(ROOT))
    from benchmarks.demo_control import control_trainer

    _, results = demo
    spec = load_spec(DEMO, [f"output_dir={tmp_path}", "logging.report_to=none"])
    stage = next(s for s in spec.stage_list if s.kind == "grpo")
    trainer = control_trainer("random")(model=results[0]["model_dir"], env=rlenv.make(spec.env.id, **spec.env.kwargs),
                                        config=stage.config.model_copy(update={"progress_bar": False}))
    evals = [h["eval/pass_rate"] for h in trainer.train()["eval_history"] if "eval/pass_rate" in h]
    assert evals[0] == pytest.approx(results[0]["after"])  # the same start as the real stage
    assert max(abs(e - evals[0]) for e in evals) <= CONTROL_MAX_MOVE, evals


@pytest.mark.slow
def test_run_leaves_its_artifacts(demo):
    from trainers.metrics_log import read_metrics

    out, results = demo
    summary = json.loads((out / "summary.json").read_text())
    assert [r["kind"] for r in summary] == ["sft", "grpo"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"  # the whole run on one figure
    for r, name in zip(results, ("0-sft", "1-grpo")):
        stage = out / name
        assert (stage / "stage.json").exists()
        assert (stage / "model" / "config.json").exists() and r["model_dir"] == str(stage / "model")
        assert any((stage / "model").glob("*.safetensors"))
        assert list((stage / "checkpoints").iterdir()), "a final checkpoint per stage"
        assert (stage / "curves.png").stat().st_size > 1000
        assert list((stage / "tensorboard").rglob("events.out.tfevents.*"))
        metrics = read_metrics(stage / "metrics.jsonl")
        evals = [m for m in metrics if "eval/pass_rate" in m]
        assert evals[0]["step"] == 0 and evals[-1]["step"] == r["steps"]
        samples = [json.loads(line) for line in (stage / "samples.jsonl").read_text().splitlines()]
        assert {"prompt", "completion", "reward", "correct", "step"} <= set(samples[0])
        assert {s["step"] for s in samples} == {e["step"] for e in evals}
    grpo_metrics = read_metrics(out / "1-grpo" / "metrics.jsonl")
    train = [m for m in grpo_metrics if "reward" in m]
    assert train and all(0.0 <= m["reward"] <= 1.0 for m in train)


@pytest.mark.slow
def test_rlenv_eval_on_the_demo_checkpoint(demo, tmp_path, capsys):
    from rlenv.runspec import load_spec

    out, results = demo
    env = load_spec(DEMO).env
    samples = tmp_path / "eval.jsonl"
    kwargs = [a for k, v in env.kwargs.items() for a in ("--env-kwarg", f"{k}={v}")]
    rc = main(["eval", env.id, "--model", results[1]["model_dir"], "-n", "4", "-k", "1,4", "--num-tasks", "16",
               "--max-new-tokens", "12", "--out", str(samples), *kwargs])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["pass@1"] <= result["pass@4"] <= 1.0
    assert result["pass@4"] > 0.5  # the trained model solves most of 16 problems in 4 tries
    lines = samples.read_text().splitlines()
    assert len(lines) == 16 * 4


@pytest.mark.slow
def test_the_main_jobs_grpo_stage_twice_with_one_seed_gives_the_same_weights(demo, tmp_path, default_threads):
    """The demo spec's GRPO stage, as written (its config, engine and env; shortened to a few steps,
    no evaluation), run twice from the demo's SFT model with one seed on torch's default thread
    count (at least 2): the exported weights are bit-identical. What still changes the last bits
    across machines, thread counts and kernels: docs/training.md, "Same seed, same result"."""
    import torch
    import yaml
    from safetensors.torch import load_file

    from trainers.pipeline import run_spec

    _, results = demo
    raw = yaml.safe_load(DEMO.read_text())
    raw["stages"] = [s for s in raw["stages"] if "grpo" in s]
    raw["stages"][0]["grpo"].update(max_steps=4, save_steps=0, eval_num_tasks=0, progress_bar=False)
    raw.update(model=results[0]["model_dir"], logging={"report_to": "none"})
    weights = []
    for run in ("a", "b"):
        out = run_spec(dict(raw, output_dir=str(tmp_path / run)), print_summary=False)
        weights.append(load_file(Path(out[0]["model_dir"]) / "model.safetensors"))
    start = load_file(Path(results[0]["model_dir"]) / "model.safetensors")
    a, b = weights
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the stage trained
    differ = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert not differ, differ

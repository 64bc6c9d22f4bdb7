"""Sharded training for real, on CPU, with the repository's own accelerate configs and two gloo ranks:

* ``examples/accelerate/fsdp.yaml`` — accelerate's own FSDP2 path (the one a GPU run takes; rlenv
  switches accelerate to it on machines without GPUs, see trainers/distributed.py);
* ``examples/accelerate/deepspeed_zero3.yaml`` — DeepSpeed ZeRO-3 on its CPU accelerator (parameters
  partitioned at load, ``zero3_init_flag``), and ``deepspeed_zero2.yaml`` (optimizer state and
  gradients sharded); skipped when DeepSpeed is not installed.

One launch per config (module fixture) runs three 1-step GRPO trainings in the same two processes:

* ``pipeline`` — ``run_spec`` (what ``rlenv train`` runs): summary.json says fsdp2 / zero2 / zero3 × 2 over
  gloo, the evaluation before and after training completed, one rank printed the summary table;
* ``full`` (β = 0.1: the reference is loaded and sharded like the policy) / ``lora`` — every rank
  draws rank 0's prompts and samples, so the averaged gradient is one rank's: the weights gathered
  from the shards (the exported model) must equal a one-process run of the same step (tolerances
  below, from the measured spread; LoRA under FSDP2 came out bit-identical). Both save a checkpoint
  (sharded optimizer state through accelerate, the model gathered into ``model/``);
* ``resumed`` — continues ``full`` from its checkpoint for a second step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scale_worker import arithmetic_tasks, grpo_class, grpo_config, launch, length_reward  # noqa: E402

CONFIGS = {"fsdp2": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml"}
# With Adam's usual epsilon (1e-8) its first step is ~lr·sign(g): a gradient within float noise of 0
# flips sign under another reduction order (FSDP2's reduce-scatter, DeepSpeed's bucketed fp32
# reduction) and moves that weight by 2·lr, so a comparison after one step failed now and then. The
# weight runs use adam_epsilon=1: the step is then ~lr·g/(|g|+1), smooth in g, and the shards'
# reduction noise stays at float-rounding size. The tolerance keeps DeepSpeed's bucketed fp32 sums.
TOL = {"fsdp2": 1e-6, "zero2": 5e-5, "zero3": 5e-5}
SMOOTH = {"adam_epsilon": 1.0, "lr": 0.1}
RUNS = [{"name": "pipeline", "kind": "pipeline", "eval_tasks": 4},
        {"name": "full", "kind": "grpo", "same_data": True, "eval_tasks": 2, "beta": 0.1, "save_steps": 1, **SMOOTH},
        {"name": "resumed", "dir": "full", "kind": "grpo", "same_data": True, "beta": 0.1, "save_steps": 1,
         "steps": 2, "resume": "latest", **SMOOTH},
        # the adapters' step reaches the merged weights as a product B·A: a larger rate moves them as far
        {"name": "lora", "kind": "grpo", "same_data": True, "lora": True, "save_steps": 1, **SMOOTH, "lr": 1.0}]


def _have_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


NO_DEEPSPEED = pytest.mark.skipif(not _have_deepspeed(), reason=(
    "DeepSpeed is not installed: pip install 'rlenv-rlvr[deepspeed]' (see .ci/install-deepspeed.sh)"))


@pytest.fixture(scope="module", params=["fsdp2", pytest.param("zero2", marks=NO_DEEPSPEED),
                                        pytest.param("zero3", marks=NO_DEEPSPEED)])
def sharded_run(request, micro_model_dir, tmp_path_factory):
    kind = request.param
    out = tmp_path_factory.mktemp(kind)
    config = str(HERE.parent / "examples" / "accelerate" / CONFIGS[kind])
    proc, results = launch(config, {"model": micro_model_dir, "out": str(out), "runs": RUNS}, out,
                           env={"RLENV_COLLECTIVE_TIMEOUT": "300"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return kind, out, results, proc.stdout


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _single_process(run: dict, model_dir: str, out: Path):
    cls = grpo_class(same_data=True)
    trainer = cls(model=model_dir, env=arithmetic_tasks(), verifiers=[length_reward], config=grpo_config(run, str(out)))
    return trainer, trainer.train()


@pytest.mark.slow
def test_pipeline_records_the_parallelism_in_summary(sharded_run):
    kind, out, results, stdout = sharded_run
    summary = json.loads((out / "pipeline" / "summary.json").read_text())
    assert [s["kind"] for s in summary] == ["grpo"] and summary[0]["steps"] == 1
    assert summary[0]["distributed"] == {"type": kind, "world_size": 2, "backend": "gloo"}
    for r in results["pipeline"]:
        assert r["stages"][0]["distributed"]["type"] == kind
    assert stdout.count(f"distributed={kind} world_size=2 backend=gloo") == len(RUNS)  # a log line per run, rank 0 only
    assert stdout.count("rlenv train:") == 1  # the summary table: printed once, by rank 0
    history = [json.loads(line) for line in (out / "pipeline" / "0-grpo" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/pass_rate" in h for h in history)  # evaluation under sharding ran (and did not hang)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full", "lora"])
def test_gathered_weights_equal_a_single_process_step(sharded_run, micro_model_dir, tmp_path, name):
    kind, out, results, _ = sharded_run
    ranks = results[name]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["distributed"] == {"type": kind, "world_size": 2, "backend": "gloo"} for r in ranks)
    run = next(r for r in RUNS if r["name"] == name)
    trainer, _ = _single_process(run, micro_model_dir, tmp_path / name)
    assert trainer.distributed["type"] == "none"
    # "full" was continued by "resumed" in the same folder: its step-1 weights are in its checkpoint
    # (also gathered from the shards); the single-process run's export is its step 1
    folder = out / "full" / "checkpoints" / "checkpoint-1" / "model" if name == "full" else ranks[0]["model_dir"]
    sharded, single = _weights(folder), _weights(Path(tmp_path / name / "model"))
    start = {k: v for k, v in _weights(micro_model_dir).items()}
    assert set(sharded) == set(single)
    moved = 0.0
    for k, v in single.items():
        torch.testing.assert_close(sharded[k], v, rtol=0, atol=TOL[kind], msg=k)
        moved = max(moved, float((v - start[k]).abs().max()))
    assert moved > 1e-3  # the step itself moved the weights far beyond the tolerance


@pytest.mark.slow
def test_lora_adapter_export_reloads_to_the_merged_model(sharded_run, micro_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kind, out, results, _ = sharded_run
    folder = Path(results["lora"][0]["model_dir"])
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, folder / "adapter").merge_and_unload().state_dict()
    exported = _weights(folder)
    adapter = _weights(folder / "adapter")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # trained, not the zero init
    for k, v in exported.items():
        torch.testing.assert_close(merged[k], v, rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_checkpoint_saved_and_resumed_under_sharding(sharded_run):
    from trainers.checkpoint import list_checkpoints, verify_checkpoint

    kind, out, results, _ = sharded_run
    assert [r["steps"] for r in results["resumed"]] == [2, 2]
    checkpoints = list_checkpoints(out / "full" / "checkpoints")
    assert [p.name for p in checkpoints] == ["checkpoint-1", "checkpoint-2"]
    for p in checkpoints:
        verify_checkpoint(p)
        assert (p / "accelerate_state").is_dir()  # the sharded optimizer state, through accelerate
    step1, step2 = (_weights(p / "model") for p in checkpoints)
    assert max(float((step2[k] - step1[k]).abs().max()) for k in step1) > 1e-3  # the resumed step trained
    adapter = _weights(out / "lora" / "checkpoints" / "checkpoint-1" / "model")
    assert adapter and all("lora_" in k for k in adapter)  # a LoRA checkpoint holds the gathered adapter

"""The shared loop: exact resume, graceful stop on SIGTERM, accumulation, LoRA reference, config errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from trainers.checkpoint import latest_checkpoint
from trainers.config import DPOConfig, GRPOConfig, SFTConfig, TrainConfig
from trainers.metrics_log import read_metrics
from trainers.sft import SFTTrainer

# equal-length rows (single-digit sums), so a mean over tokens is the same however rows are grouped
ROWS = [{"prompt": f"What is {a} + {b}?", "completion": f"<a>{a + b}</a>"} for a in range(5) for b in range(5)]


def _cfg(out, **kw):
    base = dict(output_dir=str(out), learning_rate=3e-3, per_device_train_batch_size=4, progress_bar=False,
                report_to="none", lr_scheduler="linear", warmup_steps=2, weight_decay=0.01)
    base.update(kw)
    return SFTConfig(**base)


class StopAfter(SFTTrainer):
    """Stops itself after ``stop_at`` steps, the way SIGTERM does (flag checked after the step)."""

    stop_at = 3

    def step_metrics(self, data):
        if self.global_step + 1 == self.stop_at:
            self.request_stop()
        return {}


def _losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def test_resume_continues_exactly(micro_model_dir, tmp_path):
    full = SFTTrainer(micro_model_dir, _cfg(tmp_path / "full", max_steps=7), train_dataset=ROWS).train()
    assert full["steps"] == 7
    # 25 rows / batch 4 → 6 micro-batches per epoch: step 7 crosses into epoch 1, so the data
    # position (epoch, index) must survive the restart too
    part = StopAfter(micro_model_dir, _cfg(tmp_path / "part", max_steps=7), train_dataset=ROWS).train()
    assert part["stopped_early"] and part["steps"] == 3
    assert latest_checkpoint(tmp_path / "part" / "checkpoints").name == "checkpoint-3"
    resumed = SFTTrainer(micro_model_dir, _cfg(tmp_path / "part", max_steps=7, resume_from_checkpoint="latest"),
                         train_dataset=ROWS).train()
    assert resumed["steps"] == 7
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert sorted(b) == list(range(1, 8))  # the resumed log continues the interrupted one
    for step in range(1, 8):
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    from transformers import AutoModelForCausalLM

    wa = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "model").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(tmp_path / "part" / "model").state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def test_gradient_accumulation_equals_big_batch(micro_model_dir, tmp_path):
    one = SFTTrainer(micro_model_dir, _cfg(tmp_path / "a", max_steps=1, per_device_train_batch_size=4,
                                           warmup_steps=0, lr_scheduler="constant"), train_dataset=ROWS)
    two = SFTTrainer(micro_model_dir, _cfg(tmp_path / "b", max_steps=1, per_device_train_batch_size=2,
                                           gradient_accumulation_steps=2, warmup_steps=0, lr_scheduler="constant"),
                     train_dataset=ROWS)
    one.train(), two.train()
    for (k, a), b in zip(one.unwrapped_model.state_dict().items(), two.unwrapped_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_lora_reference_is_the_base(micro_model_dir, tmp_path):
    class WithRef(SFTTrainer):
        def needs_reference(self):
            return True

    t = WithRef(micro_model_dir, _cfg(tmp_path, max_steps=3, lora={"r": 4}, learning_rate=5e-2),
                train_dataset=ROWS)
    assert t.ref.shares_weights  # no second copy of the model under LoRA
    x = torch.tensor([[5, 6, 7, 8]])
    before = t.ref(input_ids=x).logits
    t.train()
    with torch.no_grad():
        policy = t.unwrapped_model(input_ids=x).logits
    assert not torch.allclose(policy, before)  # the adapter learned something
    torch.testing.assert_close(t.ref(input_ids=x).logits, before)  # the reference did not move
    # the exported model is merged (plain transformers folder) with the adapter kept beside it
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "model" / "adapter").is_dir()
    full = WithRef(micro_model_dir, _cfg(tmp_path / "f", max_steps=1), train_dataset=ROWS)
    assert not full.ref.shares_weights and not any(p.requires_grad for p in full.ref.frozen.parameters())
    assert SFTTrainer(micro_model_dir, _cfg(tmp_path / "n", max_steps=1), train_dataset=ROWS).ref is None


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"GRPOConfig.learning_rate must be > 0, got -1"):
        GRPOConfig(learning_rate=-1)
    with pytest.raises(ValueError, match=r"DPOConfig.loss_type: unknown DPO loss `nope`"):
        DPOConfig(loss_type="nope")
    with pytest.raises(ValueError, match=r"TrainConfig.max_steps"):
        TrainConfig(max_steps=-1)
    with pytest.raises(ValueError, match=r"SFTConfig.lr_scheduler"):
        SFTConfig(lr_scheduler="warp")
    with pytest.raises(ValueError, match=r"GRPOConfig.overlong_buffer must be < max_new_tokens"):
        GRPOConfig(max_new_tokens=8, overlong_buffer=8)


def test_wrong_config_type_and_tiny_data(micro_model_dir, tmp_path):
    with pytest.raises(TypeError, match="SFTTrainer takes a SFTConfig"):
        SFTTrainer(micro_model_dir, DPOConfig(output_dir=str(tmp_path)), train_dataset=ROWS)
    t = SFTTrainer(micro_model_dir, _cfg(tmp_path, per_device_train_batch_size=64), train_dataset=ROWS)
    with pytest.raises(ValueError, match="fewer than one batch"):
        t.train()


SCRIPT = textwrap.dedent("""
    import sys
    from trainers.sft import SFTTrainer
    from trainers.config import SFTConfig
    rows = [{"prompt": f"What is {a} + {b}?", "completion": f"<a>{a + b}</a>"} for a in range(5) for b in range(5)]
    cfg = SFTConfig(output_dir=sys.argv[2], learning_rate=1e-3, max_steps=100000, per_device_train_batch_size=2,
                    progress_bar=False, report_to="none")
    out = SFTTrainer(sys.argv[1], cfg, train_dataset=rows).train()
    print("STOPPED", out["stopped_early"], out["steps"])
""")


@pytest.mark.slow
def test_sigterm_stops_gracefully_with_a_checkpoint(micro_model_dir, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), micro_model_dir, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 120
    while time.time() < deadline and len(_losses(out)) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    steps = int(stdout.split("STOPPED True ")[1].split()[0])
    assert steps >= 2
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None and ckpt.name == f"checkpoint-{steps}"
    assert (out / "model" / "model.safetensors").exists()
    # every line of metrics.jsonl is whole
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(read_metrics(out / "metrics.jsonl")) == len(lines) >= 2

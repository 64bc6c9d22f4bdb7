"""GRPO on a GPU with the defaults: ``model_dtype="auto"`` (float32 trained weights under bf16
autocast, bf16 frozen ones), the reference copy in bf16, the HF engine decoding through a captured
CUDA graph and handing its memory back before training, the chunked LM head under autocast.

Marked ``gpu`` (skipped without CUDA, see conftest.py); run by ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainers import GRPOConfig, GRPOTrainer

pytestmark = pytest.mark.gpu


def odd_length(completion, task):
    """A reward with a spread in every group, so the policy gradient is not zero."""
    return float(len(completion) % 2)


def trainer(model_dir, tmp_path, **kw) -> GRPOTrainer:
    cfg = GRPOConfig(output_dir=str(tmp_path), max_steps=1, learning_rate=1e-3, num_prompts_per_step=2,
                     group_size=4, max_new_tokens=12, report_to="none", progress_bar=False, eval_num_tasks=0,
                     seed=1, **kw)
    assert cfg.model_dtype == "auto"
    return GRPOTrainer(model_dir, "arithmetic-v0", cfg, verifiers=[odd_length])


def one_step(tr: GRPOTrainer):
    tr._prepare()
    data = tr.next_step_data()
    return data, dict(data.metrics, **tr.training_step(data))


def assert_engine_healthy(tr, data):
    assert data.metrics["engine/cuda_graph"] == 1.0, "the rollout did not decode through a CUDA graph"
    assert data.metrics["engine/cuda_graph_capture_failures"] == 0.0
    assert not tr.engine._states, "the decode caches were not released before training"


def test_full_finetuning_keeps_float32_master_weights_and_a_bf16_reference(tiny_model_dir, tmp_path):
    tr = trainer(tiny_model_dir, tmp_path, beta=0.04)
    data, m = one_step(tr)
    assert tr.accelerator.mixed_precision == "bf16"
    assert all(p.dtype == torch.float32 for p in tr.unwrapped_model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in tr.ref.frozen.parameters())
    assert_engine_healthy(tr, data)
    assert math.isfinite(m["loss"]) and m["grad_norm"] > 0
    # step 0: policy and reference are the same weights; only bf16 rounding separates them
    assert 0 <= m["kl"] < 1e-3, m["kl"]


def test_lora_keeps_a_bf16_base_and_float32_adapters(tiny_model_dir, tmp_path):
    tr = trainer(tiny_model_dir, tmp_path, beta=0.04, lora={"r": 4, "alpha": 8})
    base_before = {n: p.detach().clone() for n, p in tr.unwrapped_model.named_parameters() if "lora_" not in n}
    data, m = one_step(tr)
    named = dict(tr.unwrapped_model.named_parameters())
    lora = {n: p for n, p in named.items() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora.values())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for n, p in named.items() if n not in lora)
    assert tr.ref.shares_weights
    assert_engine_healthy(tr, data)
    assert math.isfinite(m["loss"])
    trained = [float(p.detach().abs().max()) for n, p in lora.items() if "lora_B" in n]
    assert max(trained) > 0, "the adapters did not train"
    for n, before in base_before.items():  # the frozen base is untouched
        assert torch.equal(named[n].detach().cpu(), before.cpu()), n

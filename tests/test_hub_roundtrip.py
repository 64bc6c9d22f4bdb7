"""Leaving us is free: what every training stage writes loads with plain transformers / peft in a
fresh process that imports nothing of this project.

Each stage (SFT, RM, GRPO, PPO, DPO, online DPO; SFT also under LoRA: every stage exports through
the same ``save_model``) trains one step on
the micro model. Its exported ``model/`` folder and its checkpoint's ``model/`` folder are then
loaded in a subprocess with ``from_pretrained`` (``PeftModel.from_pretrained`` for adapters), and
the logits must equal those of the trainer's own in-memory model on the same input.
"""

from __future__ import annotations

import json
import subprocess
import time
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

PROMPT = "What is 2 + 3? <a>5</a>"

LOADER = r'''
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from peft import PeftModel

cases = json.load(open(sys.argv[1]))
out = {}
for c in cases:
    cls = AutoModelForSequenceClassification if c["kind"] == "rm" else AutoModelForCausalLM
    if c.get("adapter"):
        model = PeftModel.from_pretrained(cls.from_pretrained(c["base"]), c["path"])
        tok = AutoTokenizer.from_pretrained(c["base"])
    else:
        model = cls.from_pretrained(c["path"])
        tok = AutoTokenizer.from_pretrained(c["path"])
    model.eval()
    ids = tok(c["prompt"], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    out[c["name"]] = {"logits": logits.tolist(), "ids": ids[0].tolist(), "class": type(model).__name__}
own = sorted(m for m in sys.modules if m.split(".")[0] in ("rlenv", "verifiers", "trainers", "tasks"))
print(json.dumps({"results": out, "project_modules": own}))
'''


def _last_logits(model, tokenizer) -> list:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1].float().tolist()


def _pairs(env, n: int = 8) -> list:
    rows = []
    for i in range(n):
        obs, info = env.reset(options={"task_index": i})
        task = info["task"]
        rows.append({"prompt": obs, "chosen": task.info["target"], "rejected": f"<a>{int(task.answer) + 1}</a>"})
    return rows


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory, micro_model_dir):
    """Train every stage for one step; return the load cases (and the logits expected of each)."""
    import rlenv
    import trainers as T

    root = tmp_path_factory.mktemp("stages")
    env = rlenv.make("arithmetic-v0", digits=1)
    pairs = _pairs(env)
    common = dict(max_steps=1, save_steps=1, eval_num_tasks=1, eval_max_new_tokens=4, report_to="none",
                  progress_bar=False, learning_rate=1e-3)
    online = dict(common, num_prompts_per_step=2, group_size=2, max_new_tokens=4)
    lora = dict(lora={"r": 4, "alpha": 8})
    stages = {
        "sft": lambda out: T.SFTTrainer(micro_model_dir, T.SFTConfig(output_dir=out, per_device_train_batch_size=4,
                                                                     **common), env=env, num_env_examples=8),
        "rm": lambda out: T.RewardTrainer(micro_model_dir, T.RewardConfig(output_dir=out, per_device_train_batch_size=4,
                                                                          **common), train_dataset=pairs),
        "dpo": lambda out: T.DPOTrainer(micro_model_dir, T.DPOConfig(output_dir=out, per_device_train_batch_size=4,
                                                                     **common), train_dataset=pairs),
        "grpo": lambda out: T.GRPOTrainer(model=micro_model_dir, env=env, config=T.GRPOConfig(output_dir=out, **online)),
        "ppo": lambda out: T.PPOTrainer(model=micro_model_dir, env=env,
                                        config=T.PPOConfig(output_dir=out, ppo_epochs=1, **online)),
        "online_dpo": lambda out: T.OnlineDPOTrainer(model=micro_model_dir, env=env,
                                                     config=T.OnlineDPOConfig(output_dir=out, **online)),
        "sft_lora": lambda out: T.SFTTrainer(micro_model_dir, T.SFTConfig(output_dir=out, per_device_train_batch_size=4,
                                                                          **common, **lora), env=env, num_env_examples=8),
    }
    cases, expected = [], {}
    for name, build in stages.items():
        out_dir = root / name
        trainer = build(str(out_dir))
        start = time.perf_counter()
        result = trainer.train()
        print(f"{name}: {time.perf_counter() - start:.1f}s")
        kind = name.split("_lora")[0]
        model_dir = Path(result["model_dir"])
        want = _last_logits(trainer.unwrapped_model, trainer.tokenizer)
        ckpt = sorted((out_dir / "checkpoints").glob("checkpoint-*"))
        assert ckpt, f"{name}: no checkpoint written"
        if name.endswith("_lora"):
            # exported: the merged model (plain) and the adapter alone; the checkpoint holds the adapter
            cases += [{"name": name, "kind": kind, "path": str(model_dir)},
                      {"name": f"{name}/adapter", "kind": kind, "path": str(model_dir / "adapter"),
                       "adapter": True, "base": micro_model_dir},
                      {"name": f"{name}/checkpoint", "kind": kind, "path": str(ckpt[-1] / "model"),
                       "adapter": True, "base": micro_model_dir}]
        else:
            cases += [{"name": name, "kind": kind, "path": str(model_dir)},
                      {"name": f"{name}/checkpoint", "kind": kind, "path": str(ckpt[-1] / "model")}]
        for c in cases:
            expected.setdefault(c["name"], want)
        del trainer
    for c in cases:
        c["prompt"] = PROMPT
    return cases, expected, root


def test_every_stage_loads_with_plain_from_pretrained_in_a_fresh_process(stage_outputs):
    cases, expected, root = stage_outputs
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "load.py").write_text(LOADER)
    # cwd outside the repo: nothing of the project is importable by accident of the working directory
    proc = subprocess.run([sys.executable, str(root / "load.py"), str(root / "cases.json")], cwd=str(root),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == []
    results = report["results"]
    assert sorted(results) == sorted(c["name"] for c in cases)
    assert {k.split("/")[0] for k in results} == {"sft", "rm", "dpo", "grpo", "ppo", "online_dpo", "sft_lora"}
    for name, got in results.items():
        want = torch.tensor(expected[name])
        assert torch.allclose(torch.tensor(got["logits"]), want, atol=1e-4), name
    assert results["rm"]["class"].endswith("ForSequenceClassification") and isinstance(results["rm"]["logits"], float)
    assert results["sft_lora/adapter"]["class"] == "PeftModelForCausalLM"


def test_exports_are_safetensors_with_tokenizer_and_no_pickles(stage_outputs):
    cases, _, _ = stage_outputs
    for c in cases:
        folder = Path(c["path"])
        names = {p.name for p in folder.iterdir()}
        weights = "adapter_model.safetensors" if c.get("adapter") else "model.safetensors"
        assert weights in names, (c["name"], names)
        assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names), (c["name"], names)
        if not c.get("adapter"):
            assert "tokenizer_config.json" in names and "config.json" in names

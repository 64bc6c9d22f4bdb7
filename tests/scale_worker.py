"""Run by the multi-process tests (tests/test_fsdp.py, test_zero3.py, test_collectives.py,
test_vllm_server.py) under ``accelerate launch``; not a test module itself.

``python scale_worker.py PLAN.json`` runs the plan's ``runs`` one after the other in the same
processes and prints one ``RESULT {json}`` line per run and rank. Kinds of run:

* ``pipeline`` — ``trainers.pipeline.run_spec`` on a spec dict (the path ``rlenv train`` takes);
* ``grpo`` — a :class:`GRPOTrainer` built directly, with options: ``same_data`` (every rank draws the
  prompts and samples rank 0 would, so the 2-rank update equals a one-process update on the same
  data), ``prompts_by_rank`` (a different number of prompts per rank), ``old_empty_path`` (the code
  before the empty-micro-batch fix), ``engine`` (engine settings), ``lora``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

ARITH = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(10) for b in range(10)]


def length_reward(completion: str, task) -> float:
    """A reward a random model's samples differ on (so GRPO advantages are not all zero)."""
    return float(len(completion) % 5) / 4


def register_length_env() -> str:
    """``scale-length-v0``: arithmetic prompts scored by :func:`length_reward` (for run_spec)."""
    import rlenv
    from verifiers.rubric import Rubric

    env_id = "scale-length-v0"
    try:
        rlenv.spec(env_id)
    except LookupError:
        tasks = [rlenv.Task(t["prompt"], t["answer"]) for t in ARITH]
        rlenv.register(env_id, entry_point=lambda: rlenv.SingleTurnEnv(tasks, Rubric([length_reward])))
    return env_id


def grpo_class(same_data: bool = False, old_empty_path: bool = False):
    """GRPOTrainer, optionally with rank-independent draws and/or the pre-fix empty micro-batches."""
    from trainers import GRPOTrainer
    from trainers.online import gather_rows

    class Trainer(GRPOTrainer):
        if same_data:
            def _seed(self, round_: int = 0) -> int:
                # every rank draws what rank 0 draws: the 2-rank mean gradient is then one rank's
                step = self.global_step * 64 + round_
                return (self.config.seed * 1_000_003 + step * 8192) % 2**62

        if old_empty_path:
            def micro_batches(self, data):
                # the code before the fix: an empty micro-batch is {"rows": empty}, and
                # GRPOTrainer.compute_loss returns sum(p.sum() * 0) without calling the model
                out = []
                for rows, norm in zip(data.chunks, data.normalizers):
                    mb = gather_rows(data.batch, rows, data.per_token, data.per_row) if len(rows) else {"rows": rows}
                    mb["normalizer"] = norm
                    out.append(mb)
                return out

        rank_metrics: list  # per-step metrics of this rank, before the cross-rank average

        def setup(self) -> None:
            super().setup()
            self.rank_metrics = []

        def step_metrics(self, data):
            metrics = super().step_metrics(data)
            self.rank_metrics.append({k: v for k, v in metrics.items() if k.startswith("dynamic/")} |
                                     {"rows": len(data.batch)})
            return metrics

    return Trainer


def grpo_config(run: dict, out: str, rank: int = 0):
    """The GRPOConfig of a ``grpo`` run (also used by the tests' one-process reference runs)."""
    from trainers import GRPOConfig

    prompts = run.get("prompts_by_rank", [run.get("prompts", 2)] * 8)[rank]
    cfg = dict(output_dir=out, max_steps=run.get("steps", 1), learning_rate=run.get("lr", 1e-2), report_to="none",
               progress_bar=False, lr_scheduler="constant", seed=0, num_prompts_per_step=prompts,
               group_size=run.get("group_size", 4), max_new_tokens=8, temperature=1.0,
               eval_num_tasks=run.get("eval_tasks", 0), eval_max_new_tokens=4,
               gradient_accumulation_steps=run.get("gas", 1), dynamic_sampling=run.get("dynamic", False),
               max_resample_rounds=run.get("rounds", 3), beta=run.get("beta", 0.0),
               engine=run.get("engine", "hf"), save_steps=run.get("save_steps", 0),
               resume_from_checkpoint=run.get("resume"), adam_epsilon=run.get("adam_epsilon", 1e-8))
    if run.get("lora"):
        cfg.update(lora={"r": 4, "alpha": 8, "target_modules": "all-linear"})
    return GRPOConfig(**cfg)


def arithmetic_tasks() -> list:
    """The tasks of the ``grpo`` runs."""
    import rlenv

    return [rlenv.Task(t["prompt"], t["answer"]) for t in ARITH]


def run_grpo(run: dict, model_dir: str, out: str) -> dict:
    import os

    rank_hint = int(os.environ.get("RANK", "0"))
    verifiers = [length_reward]
    if run.get("constant_reward_on_rank1") and rank_hint == 1:
        verifiers = [lambda completion, task: 0.5]  # every group uninformative: dynamic sampling resamples
    cls = grpo_class(run.get("same_data", False), run.get("old_empty_path", False))
    trainer = cls(model=model_dir, env=arithmetic_tasks(), verifiers=verifiers,
                  config=grpo_config(run, out, rank_hint))
    result = trainer.train()
    extra = {}
    if run.get("sync_after"):  # push the final weights (a collective: every rank calls it)
        trainer.engine.sync_weights(trainer.unwrapped_model)
    engine = trainer._engine
    if engine is not None and getattr(engine, "client", None) is not None:
        extra = {"completion_tokens": engine.client.usage["completion_tokens"],
                 "sync_count": getattr(engine, "sync_count", 0), "syncs": len(engine.sync_seconds)}
    if engine is not None and getattr(engine, "llm", None) is not None:  # colocated vLLM
        parallel = engine.llm.llm_engine.vllm_config.parallel_config
        extra = {"syncs": len(engine.sync_seconds), "executor": str(parallel.distributed_executor_backend),
                 "vllm_rank": int(parallel.rank) if hasattr(parallel, "rank") else None}
    if run.get("check_greedy") and rank_hint == 0:
        extra["greedy"] = greedy_vs_hf(engine, result["model_dir"], model_dir)
    return {"model_dir": result["model_dir"], "distributed": result["distributed"], "steps": result["steps"],
            "eval": [h.get("eval/pass_rate") for h in result["eval_history"]],
            "rank_metrics": trainer.rank_metrics, **extra}


GREEDY_PROMPTS = [[{"role": "user", "content": "What is 12+7?"}], [{"role": "user", "content": "What is 3+4?"}],
                  [10, 20, 30, 40, 50]]


def greedy_vs_hf(engine, model_dir: str, start_dir: str, max_new: int = 10) -> dict:
    """The engine's greedy tokens next to transformers' ``generate`` on the exported model, and the
    largest log-prob gap of the engine's tokens to that model (and of that model to the start one)."""
    from transformers import AutoModelForCausalLM

    from rlenv.engines.base import SamplingParams
    from rlenv.engines.hf import encode_prompt

    import transformers.integrations.deepspeed as hf_ds

    tok = engine.tokenizer
    completions = [c[0] for c in engine.generate(GREEDY_PROMPTS, SamplingParams(temperature=0, max_new_tokens=max_new))]
    want, gap, moved = [], 0.0, 0.0
    # this rank alone runs plain copies: while a ZeRO-3 config is registered transformers would
    # partition them at load and sync generate() across ranks (collectives nobody else joins)
    saved, hf_ds._hf_deepspeed_config_weak_ref = hf_ds._hf_deepspeed_config_weak_ref, None
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        start = AutoModelForCausalLM.from_pretrained(start_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            for p, c in zip(GREEDY_PROMPTS, completions):
                ids = encode_prompt(tok, p)
                out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                want.append(out[0, len(ids):].tolist())
                full = torch.tensor([ids + c.token_ids])
                lp = [torch.log_softmax(m(full).logits[0, len(ids) - 1:-1].float(), -1)
                      .gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0] for m in (model, start)]
                gap = max(gap, float((lp[0] - torch.tensor(c.logprobs)).abs().max()))
                moved = max(moved, float((lp[0] - lp[1]).abs().max()))
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved
    return {"engine": [c.token_ids for c in completions], "hf": want, "logprob_gap": gap, "trained_vs_start": moved}


def run_ppo(run: dict, model_dir: str, out: str) -> dict:
    """A PPO step (its value head is a second trained module)."""
    from trainers import PPOConfig, PPOTrainer

    config = PPOConfig(output_dir=out, max_steps=1, learning_rate=1e-3, report_to="none", progress_bar=False,
                       num_prompts_per_step=2, group_size=2, max_new_tokens=8, eval_num_tasks=0)
    result = PPOTrainer(model=model_dir, env=arithmetic_tasks(), verifiers=[length_reward], config=config).train()
    return {"distributed": result["distributed"], "steps": result["steps"]}


def run_pipeline(run: dict, model_dir: str, out: str) -> dict:
    from trainers.pipeline import run_spec

    register_length_env()
    spec = {"model": {"path": model_dir, **({"lora": {"r": 4, "alpha": 8}} if run.get("lora") else {})},
            "env": "scale-length-v0", "output_dir": out, "seed": 0, "logging": {"report_to": "none"},
            "engine": run.get("engine", {"name": "hf", "sampling": {"max_new_tokens": 8}}),
            "stages": [{"grpo": {"max_steps": 1, "learning_rate": 1e-2, "num_prompts_per_step": 2, "group_size": 4,
                                 "eval_num_tasks": run.get("eval_tasks", 4), "eval_max_new_tokens": 4,
                                 "progress_bar": False}}]}
    results = run_spec(spec)
    return {"stages": [{k: r.get(k) for k in ("kind", "steps", "distributed", "model_dir")} for r in results]}


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    for run in plan["runs"]:
        out = str(Path(plan["out"]) / run.get("dir", run["name"]))  # "dir": continue another run's folder
        fn = {"grpo": run_grpo, "pipeline": run_pipeline, "ppo": run_ppo}[run["kind"]]
        result = fn(run, plan["model"], out)
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        print("RESULT " + json.dumps({"name": run["name"], "rank": rank, **result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])


def launch(config_file: str, plan: dict, tmp_path: Path, *, processes: int = 2, timeout: float = 900,
           env: dict | None = None) -> tuple:
    """Run this worker under ``accelerate launch --config_file CONFIG`` (``processes`` ranks, no
    mixed precision) with ``plan``; returns ``(completed_process, {run name: [result per rank]})``."""
    import os
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan_path = tmp_path / f"plan-{port}.json"
    plan_path.write_text(json.dumps(plan))
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", config_file, "--num_processes", str(processes),
           "--num_machines", "1", "--machine_rank", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), str(Path(__file__)), str(plan_path)]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                    PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    results: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            results.setdefault(r["name"], []).append(r)
    for rs in results.values():
        rs.sort(key=lambda r: r["rank"])
    return proc, results

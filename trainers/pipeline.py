"""Stages from a spec: ``rlenv train SPEC.yaml [key=value …]`` → :func:`run_spec`.

The stages run in order, each starting from the previous stage's exported model:

- ``sft`` — on the env's ideal completions (``task.info["target"]``);
- ``rm`` — a reward model trained on verifier pairs of the current policy (correct vs incorrect
  samples; the task's ``info["target"]`` stands in as chosen when a prompt has no correct sample).
  The policy does not change; later ``ppo`` / ``online_dpo`` stages with ``rank_by: reward_model`` use it when their
  ``reward_model`` is unset;
- ``dpo`` — offline DPO on verifier pairs of the current policy (same pairing as ``rm``);
- ``grpo`` / ``ppo`` / ``online_dpo`` — online, on the env.

Each stage writes to ``<output_dir>/<index>-<kind>/``: ``model/`` (the exported model),
``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``, ``curves.png``, ``samples.jsonl`` (eval
samples; ``pairs.jsonl`` for pair-trained stages) and ``stage.json`` (its result, written last — a
rerun skips stages that have one). A summary table (pass rate before → after, time) is printed
with rich and saved as ``<output_dir>/summary.json``; ``<output_dir>/curves.png`` draws the whole
run, every stage on one step axis (:func:`trainers.plotting.plot_results`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

TRAINERS = {"sft": "SFTTrainer", "rm": "RewardTrainer", "dpo": "DPOTrainer", "grpo": "GRPOTrainer",
            "ppo": "PPOTrainer", "online_dpo": "OnlineDPOTrainer"}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pairs_for(model: str, env: Any, config: Any, seed: int, out_dir: Path) -> list:
    """Verifier pairs of the current policy for a dpo/rm stage, saved to ``pairs.jsonl``."""
    from .metrics_log import append_jsonl
    from .pairs import verifier_pairs

    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    wanted = per_step * config.max_steps if config.max_steps > 0 else 512
    pairs = verifier_pairs(model, env, num_prompts=min(2048, max(128, wanted)), samples_per_prompt=8,
                           max_new_tokens=config.eval_max_new_tokens, seed=seed, fallback_to_target=True)
    if not pairs:
        raise RuntimeError(f"no preference pairs: the model at {model} got every sampled prompt all right or "
                           f"all wrong; train an sft stage first or raise temperature")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pairs.jsonl"
    if path.exists():
        path.unlink()
    append_jsonl(path, pairs)
    return pairs


def _build_trainer(kind: str, model: str, config: Any, env: Any, reward_model: Optional[str], seed: int,
                   out_dir: Path, curriculum: Any = None) -> Any:
    import trainers

    cls = getattr(trainers, TRAINERS[kind])
    if kind == "sft":
        steps = config.max_steps if config.max_steps > 0 else 0
        n = min(20000, max(2000, steps * config.per_device_train_batch_size * config.gradient_accumulation_steps))
        return cls(model, config, env=env, num_env_examples=n)
    if kind == "rm":
        pairs = _pairs_for(model, env, config, seed, out_dir)
        held = max(1, len(pairs) // 10)  # held-apart pairs for the accuracy shown in the summary
        return cls(model, config, train_dataset=pairs[held:], eval_dataset=pairs[:held])
    if kind == "dpo":
        return cls(model, config, train_dataset=_pairs_for(model, env, config, seed, out_dir), env=env)
    if reward_model and hasattr(config, "reward_model") and not config.reward_model:
        config = dataclasses.replace(config, reward_model=reward_model)
    if curriculum is not None:  # the env at the curriculum's current level (it may rise during the stage)
        return cls(model=model, config=config, curriculum=curriculum)
    return cls(model=model, env=env, config=config)


def _first_last(history: list, key: str) -> tuple[Optional[float], Optional[float]]:
    vals = [h[key] for h in history if key in h]
    return (vals[0], vals[-1]) if vals else (None, None)


def run_spec(spec: Union[str, os.PathLike, dict, Any], overrides: Sequence[str] = (), *,
             print_summary: bool = True) -> list[dict]:
    """Run every stage of a spec (a YAML path, a dict or an :class:`rlenv.spec.RunSpec`).

    ``overrides`` are ``key=value`` strings applied before validation (``stages[1].grpo.beta=0.04``).
    Returns one result dict per stage (kind, model_dir, pass rate before/after, time, …).
    """
    import rlenv
    from rlenv.spec import RunSpec, load_spec, parse_spec

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec, overrides)
    elif isinstance(spec, dict):
        spec = parse_spec(spec, overrides)
    elif not isinstance(spec, RunSpec):
        raise TypeError(f"run_spec takes a spec path, dict or RunSpec, got {type(spec).__name__}")
    elif overrides:
        raise ValueError("overrides apply to a spec path or dict; a RunSpec is already validated")
    out_root = Path(spec.output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    curriculum = None
    if spec.env.curriculum is not None:
        from rlenv.curriculum import Curriculum

        cur = spec.env.curriculum
        curriculum = Curriculum(spec.env.id, cur.knob, cur.levels, raise_at=cur.raise_at, window=cur.window,
                                env_kwargs=spec.env.kwargs)
        env = curriculum.make_env()  # offline stages (sft, rm, dpo) use the first level
    else:
        env = rlenv.make(spec.env.id, **spec.env.kwargs)
    model = spec.model.path
    reward_model: Optional[str] = None
    results = []
    for index, stage in enumerate(spec.stage_list):
        stage_dir = Path(stage.config.output_dir)
        marker = stage_dir / "stage.json"
        if marker.exists():  # finished in an earlier run of this spec
            result = json.loads(marker.read_text())
            result["skipped"] = True
        else:
            start = time.perf_counter()
            trainer = _build_trainer(stage.kind, model, stage.config, env, reward_model, spec.seed + index, stage_dir,
                                     curriculum)
            out = trainer.train()
            history = out.get("eval_history", [])
            key = "eval/accuracy" if stage.kind == "rm" else "eval/pass_rate"
            before, after = _first_last(history, key)
            result = {"index": index, "kind": stage.kind, "model_dir": out["model_dir"], "steps": out["steps"],
                      "metric": key.split("/")[-1], "before": before, "after": after,
                      "stopped_early": out["stopped_early"], "time_s": time.perf_counter() - start,
                      "final_metrics": out.get("metrics", {})}
            del trainer
            if out["stopped_early"]:
                results.append(result)
                break
            _write_json(marker, result)
        results.append(result)
        if stage.kind == "rm":
            reward_model = result["model_dir"]
        else:
            model = result["model_dir"]
    _write_json(out_root / "summary.json", results)
    from .plotting import plot_results

    plot_results(results, [s.config.output_dir for s in spec.stage_list], out_root / "curves.png",
                 name=spec.name or str(out_root))
    if print_summary:
        print_table(results, title=spec.name or str(out_root))
    return results


def print_table(results: list[dict], title: str = "") -> None:
    """The per-stage summary (pass rate before → after, steps, time) as a rich table."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v):
        return "—" if v is None else f"{100 * v:.1f}%"

    table = Table(title=f"rlenv train: {title}" if title else "rlenv train")
    for col in ("#", "stage", "metric", "before", "after", "steps", "time", "model"):
        table.add_column(col, justify="right" if col in ("#", "before", "after", "steps", "time") else "left")
    for r in results:
        status = " (done earlier)" if r.get("skipped") else (" (stopped)" if r.get("stopped_early") else "")
        table.add_row(str(r["index"]), r["kind"] + status, r.get("metric", ""), fmt(r.get("before")),
                      fmt(r.get("after")), str(r.get("steps", "")), f"{r.get('time_s', 0):.0f}s", r["model_dir"])
    Console().print(table)

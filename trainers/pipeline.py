"""Stages from a spec: ``rlenv train SPEC.yaml [key=value …]`` → :func:`run_spec`.

The stages run in order, each starting from the previous stage's exported model. Each kind is a
registered :class:`trainers.stages.StageSpec` (config, trainer, whether it generates); the built-ins:

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
rerun skips stages that have one). A summary table (pass rate before → after, time, the parallelism
that ran) is printed with rich by rank 0 and saved as ``<output_dir>/summary.json``, each stage's
entry recording ``distributed: {type, world_size, backend}`` (see :mod:`trainers.distributed`);
``<output_dir>/curves.png`` draws the whole run, every stage on one step axis
(:func:`trainers.plotting.plot_results`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .stages import StageRun, StageSpec


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_trainer(stage: StageSpec, model: str, config: Any, run: StageRun) -> Any:
    """The trainer of one stage: ``from_stage(model, config, run)`` when its class defines it, else
    built on the run's env (on its curriculum, for a stage that generates)."""
    cls = stage.trainer_class()
    if hasattr(cls, "from_stage"):
        return cls.from_stage(model, config, run)
    if stage.generates:
        fields = type(config).model_fields
        if run.reward_model and "reward_model" in fields and not config.reward_model:
            config = config.model_copy(update={"reward_model": run.reward_model})
        if run.curriculum is not None:  # the env at the curriculum's current level (it may rise)
            return cls(model=model, config=config, curriculum=run.curriculum)
    return cls(model=model, env=run.env, config=config)


def _first_last(history: list, key: str) -> tuple[Optional[float], Optional[float]]:
    vals = [h[key] for h in history if key in h]
    return (vals[0], vals[-1]) if vals else (None, None)


@dataclasses.dataclass
class RunPlan:
    """Everything a spec decides, built but not trained — all that :func:`run_plan` hands to the
    stages (so what is not here does not reach a trainer).

    Attributes:
        model: the first stage's model (path, hub id or ``preset:<name>``).
        env: the env (at the curriculum's first level when there is one).
        curriculum: the :class:`rlenv.curriculum.Curriculum`, or None.
        stages: the validated stages (:class:`rlenv.runspec.Stage`: kind, config, stage type).
        output_dir: the run's folder (``summary.json``); each stage writes to its config's own.
        title: the summary table's title.
        seed: the run's seed (a stage's data seed is seed + its index).
        audit: what a flagged reward-hacking audit does before the first step (``env.audit``).
    """

    model: str
    env: Any
    curriculum: Any
    stages: list
    output_dir: Path
    title: str
    seed: int
    audit: str = "warn"


def plan_run(spec: Any) -> RunPlan:
    """Build what a validated :class:`rlenv.runspec.RunSpec` describes (the env, its curriculum)."""
    import rlenv

    curriculum = None
    if spec.env.curriculum is not None:
        from rlenv.curriculum import Curriculum

        cur = spec.env.curriculum
        curriculum = Curriculum(spec.env.id, cur.knob, cur.levels, raise_at=cur.raise_at, window=cur.window,
                                env_kwargs=spec.env.kwargs)
        env = curriculum.make_env()  # offline stages (sft, rm, dpo) use the first level
    else:
        env = rlenv.make(spec.env.id, **spec.env.kwargs)
    return RunPlan(model=spec.model.path, env=env, curriculum=curriculum, stages=spec.stage_list,
                   output_dir=Path(spec.output_dir), title=spec.name or str(spec.output_dir), seed=spec.seed,
                   audit=spec.env.audit)


def check_env_before_training(plan: RunPlan) -> None:
    """What runs before the first step: the env's preflight (a code env on a machine without a
    sandbox stops here) and the reward-hacking audit (``env.audit``: warn, refuse or off)."""
    import rlenv
    from rlenv.audit import audit_before_training

    getattr(plan.env, "preflight", lambda: None)()
    spec = getattr(plan.env, "spec", None)  # None: an env built by hand, audited as it is
    if plan.curriculum is not None:
        fresh = plan.curriculum.make_env
    else:
        fresh = (lambda: rlenv.make(spec.id, **spec.kwargs)) if spec is not None else (lambda: plan.env)
    audit_before_training(fresh, plan.audit, getattr(spec, "id", ""))


def run_spec(spec: Union[str, os.PathLike, dict, Any], overrides: Sequence[str] = (), *,
             print_summary: bool = True) -> list[dict]:
    """Run every stage of a spec (a YAML path, a dict or an :class:`rlenv.runspec.RunSpec`).

    ``overrides`` are ``key=value`` strings applied before validation (``stages[1].grpo.beta=0.04``).
    Returns one result dict per stage (kind, model_dir, pass rate before/after, time, …).
    """
    from rlenv.runspec import RunSpec, load_spec, parse_spec

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec, overrides)
    elif isinstance(spec, dict):
        spec = parse_spec(spec, overrides)
    elif not isinstance(spec, RunSpec):
        raise TypeError(f"run_spec takes a spec path, dict or RunSpec, got {type(spec).__name__}")
    elif overrides:
        raise ValueError("overrides apply to a spec path or dict; a RunSpec is already validated")
    return run_plan(plan_run(spec), print_summary=print_summary)


def run_plan(plan: RunPlan, print_summary: bool = True) -> list[dict]:
    """Run the stages of a :class:`RunPlan` in order (see the module docstring)."""
    check_env_before_training(plan)
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch set RANK on every rank
    model = plan.model
    reward_model: Optional[str] = None
    results = []
    for index, stage in enumerate(plan.stages):
        stage_dir = Path(stage.config.output_dir)
        marker = stage_dir / "stage.json"
        if marker.exists():  # finished in an earlier run of this spec
            result = json.loads(marker.read_text())
            result["skipped"] = True
        else:
            start = time.perf_counter()
            run = StageRun(env=plan.env, output_dir=stage_dir, curriculum=plan.curriculum, reward_model=reward_model,
                           seed=plan.seed + index)
            trainer = build_trainer(stage.stage_type, model, stage.config, run)
            out = trainer.train()
            history = out.get("eval_history", [])
            key = "eval/accuracy" if stage.stage_type.produces == "reward_model" else "eval/pass_rate"
            before, after = _first_last(history, key)
            result = {"index": index, "kind": stage.kind, "model_dir": out["model_dir"], "steps": out["steps"],
                      "metric": key.split("/")[-1], "before": before, "after": after,
                      "stopped_early": out["stopped_early"], "time_s": time.perf_counter() - start,
                      "final_metrics": out.get("metrics", {}),
                      "distributed": out.get("distributed")}  # {type, world_size, backend} that ran
            del trainer
            if out["stopped_early"]:
                results.append(result)
                break
            if main:
                _write_json(marker, result)
        results.append(result)
        if stage.stage_type.produces == "reward_model":
            reward_model = result["model_dir"]
        else:
            model = result["model_dir"]
    if main:  # under `accelerate launch` every rank runs this; one writes, draws and prints
        _write_json(plan.output_dir / "summary.json", results)
        from .plotting import plot_results

        plot_results(results, [s.config.output_dir for s in plan.stages], plan.output_dir / "curves.png",
                     name=plan.title)
        if print_summary:
            print_table(results, title=plan.title)
    return results


def print_table(results: list[dict], title: str = "") -> None:
    """The per-stage summary (pass rate before → after, steps, time) as a rich table."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v):
        return "—" if v is None else f"{100 * v:.1f}%"

    table = Table(title=f"rlenv train: {title}" if title else "rlenv train")
    for col in ("#", "stage", "metric", "before", "after", "steps", "time", "parallel", "model"):
        table.add_column(col, justify="right" if col in ("#", "before", "after", "steps", "time") else "left")
    for r in results:
        status = " (done earlier)" if r.get("skipped") else (" (stopped)" if r.get("stopped_early") else "")
        d = r.get("distributed") or {}
        parallel = f"{d['type']} ×{d['world_size']}" if d else "—"
        table.add_row(str(r["index"]), r["kind"] + status, r.get("metric", ""), fmt(r.get("before")),
                      fmt(r.get("after")), str(r.get("steps", "")), f"{r.get('time_s', 0):.0f}s", parallel,
                      r["model_dir"])
    Console().print(table)

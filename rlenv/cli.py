"""The ``rlenv`` command line.

    rlenv envs                                   list registered envs
    rlenv verifiers                              list registered verifiers
    rlenv check SPEC.yaml [key=value …]          validate a run spec, nothing heavy runs
    rlenv eval ENV_ID --model PATH [-n N] [-k K] [--num-tasks T] [--out samples.jsonl]
    rlenv eval ENV_ID --base-url URL --model NAME [--tokenizer PATH]
    rlenv train SPEC.yaml [key=value …]          run the spec's stages
    rlenv audit ENV_ID [--num-tasks N] [--json]  reward-hacking audit; exit 1 when the env is flagged
    rlenv audit --all                            the same for every registered env, one row each

Bad input (a spec error, an unknown env id, a bad override) prints one line per problem to stderr
and exits with status 2 — no traceback. Heavy modules (torch, trainers, tasks) are imported only
inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional, Sequence

USAGE_ERROR = 2


class CLIError(Exception):
    """A user error: printed as ``rlenv <cmd>: error: <line>`` lines, exit status 2."""

    def __init__(self, lines, code: int = USAGE_ERROR):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        self.code = code
        super().__init__("\n".join(self.lines))


def _load_spec(path: str, overrides: Sequence[str]):
    from .runspec import SpecError, load_spec

    try:
        return load_spec(path, overrides)
    except SpecError as e:
        raise CLIError(e.errors if not e.source else [f"{e.source}: {x}" for x in e.errors]) from None


def _optional(module: str, attr: str, what: str) -> Callable:
    """Import ``module.attr`` lazily; a clear "not yet available" when that part is not installed."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise CLIError(f"{what} is not yet available in this version ({module} is missing)", code=1) from None
        raise
    fn = getattr(mod, attr, None)
    if fn is None:
        raise CLIError(f"{what} is not yet available in this version ({module}.{attr} is missing)", code=1)
    return fn


# -- commands -------------------------------------------------------------------------------------

def cmd_envs(args) -> int:
    from . import registry
    from .plugins import plugin_errors

    registry.pprint_registry()
    for err in plugin_errors():
        print(f"warning: {err}", file=sys.stderr)
    return 0


def cmd_verifiers(args) -> int:
    pprint = _optional("verifiers.registry", "pprint_registry", "the verifier registry")
    pprint()
    from .plugins import plugin_errors

    for err in plugin_errors():
        print(f"warning: {err}", file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    spec = _load_spec(args.spec, args.overrides)
    stages = " → ".join(s.kind for s in spec.stage_list)
    lora = f"LoRA r={spec.model.lora.r}" if spec.model.lora else "full fine-tuning"
    print(f"ok: {args.spec}: model {spec.model.path} ({lora}), env {spec.env.id}, stages {stages}, "
          f"engine {spec.engine.name}, output_dir {spec.output_dir}")
    return 0


def _parse_kv(items: Sequence[str], what: str) -> dict:
    import yaml

    out = {}
    for it in items or ():
        key, sep, raw = it.partition("=")
        if not sep or not key:
            raise CLIError(f"{what} {it!r}: write it as key=value")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def _ks(raw: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in str(raw).split(",") if x.strip()})
    except ValueError:
        raise CLIError(f"-k {raw!r}: give an integer or a comma-separated list like 1,4") from None
    if not ks or ks[0] < 1:
        raise CLIError(f"-k {raw!r}: every k must be ≥ 1")
    return ks


def cmd_eval(args) -> int:
    from . import registry

    env_kwargs = _parse_kv(args.env_kwargs, "--env-kwarg")
    ks = _ks(args.k)
    n = args.n if args.n is not None else max(ks)
    if n < max(ks):
        raise CLIError(f"-n {n} is smaller than -k {max(ks)}: pass@k needs n ≥ k samples per task")
    if args.num_tasks is not None and args.num_tasks < 1:
        raise CLIError(f"--num-tasks must be ≥ 1, got {args.num_tasks}")
    try:
        env = registry.make(args.env_id, **env_kwargs)
    except LookupError as e:
        raise CLIError(str(e)) from None
    except (TypeError, ValueError, FileNotFoundError) as e:  # the env factory rejected --env-kwarg values
        raise CLIError(str(e)) from None
    _preflight(env)
    model = _server_engine(args) if args.base_url else args.model
    if not args.base_url:
        from .models.tiny import missing_local_model

        if missing_local_model(args.model):  # before any engine is built
            raise CLIError(f"--model: {missing_local_model(args.model)}")
    evaluate = _optional("rlenv.evaluation", "evaluate", "rlenv eval")
    result = evaluate(env, model, n=n, k=ks, num_tasks=args.num_tasks, out=args.out,
                      temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
                      engine=args.engine)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _server_engine(args):
    """An OpenAI-compatible engine for ``--base-url`` (``vllm serve`` or any such server); the served
    model's tokenizer (``--tokenizer``, default: ``--model``) turns returned text into token ids."""
    from transformers import AutoTokenizer

    from .engines.openai import OpenAIEngine

    name = args.tokenizer or args.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # a served model name is often not a loadable tokenizer id
        raise CLIError(f"--tokenizer: cannot load a tokenizer from {name!r} ({type(e).__name__}); pass "
                       f"--tokenizer PATH_OR_HUB_ID of the served model") from None
    return OpenAIEngine(args.base_url, model=args.model, tokenizer=tokenizer)


def _preflight(env: Any = None, run: Optional[Callable] = None) -> Any:
    """Run the env's preflight check (or ``run()``, which makes and checks the env itself) and turn
    its ``PreflightError`` — e.g. a code env on a machine without a sandbox — into one CLI error."""
    from verifiers.base import PreflightError

    try:
        return run() if run is not None else getattr(env, "preflight", lambda: None)()
    except PreflightError as e:
        raise CLIError(str(e)) from None


def cmd_train(args) -> int:
    overrides = list(args.overrides) + ([f"env.audit={args.audit}"] if args.audit else [])
    spec = _load_spec(args.spec, overrides)  # fail fast, before torch or a model is loaded
    run_spec = _optional("trainers.pipeline", "run_spec", "rlenv train")
    from .audit import AuditRefusal

    try:
        _preflight(run=lambda: run_spec(spec))  # validated, overrides applied; run_spec checks the env first
    except AuditRefusal as e:
        raise CLIError(str(e), code=1) from None
    return 0


def cmd_audit(args) -> int:
    from . import registry
    from .audit import audit, audit_ids, markdown_row

    env_kwargs = _parse_kv(args.env_kwargs, "--env-kwarg")
    if (args.env_id is None) == (not args.all):
        raise CLIError("give one ENV_ID, or --all for every registered env")
    if args.num_tasks < 1:
        raise CLIError(f"--num-tasks must be ≥ 1, got {args.num_tasks}")
    if not 0 < args.tolerance < 1:
        raise CLIError(f"--tolerance must be in (0, 1), got {args.tolerance}")
    options = {"num_tasks": args.num_tasks, "seed": args.seed, "tolerance": args.tolerance}
    if args.all:
        bad = False
        if not args.json:
            print("| env | status | flagged probes / why |\n| --- | --- | --- |")
        for env_id, outcome in audit_ids(registry.envs(), env_kwargs, **options):
            bad |= not isinstance(outcome, str) and outcome.status != "ok"
            print(json.dumps({"env_id": env_id, "error": outcome} if isinstance(outcome, str) else outcome.to_dict(),
                             default=str) if args.json else markdown_row(env_id, outcome), flush=True)
        return 1 if bad else 0
    try:
        env = registry.make(args.env_id, **env_kwargs)
    except LookupError as e:
        raise CLIError(str(e)) from None
    except (TypeError, ValueError, FileNotFoundError, ImportError) as e:  # the factory refused (or its kwargs)
        raise CLIError(str(e)) from None
    try:
        report = audit(env, env_id=args.env_id, **options)
    except (ValueError, RuntimeError, TypeError) as e:  # the env does not expose what the audit needs
        raise CLIError(str(e)) from None
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.table())
    return 0 if report.status == "ok" else 1


# -- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``rlenv`` command (every subcommand has ``--help``)."""
    p = argparse.ArgumentParser(prog="rlenv", description="Gym-like envs, verifiers and trainers for RL of "
                                "language models from verifiable rewards.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("envs", help="list registered envs", description="List registered envs (built-ins and plugins).")
    s.set_defaults(func=cmd_envs)

    s = sub.add_parser("verifiers", help="list registered verifiers", description="List registered verifiers.")
    s.set_defaults(func=cmd_verifiers)

    s = sub.add_parser("check", help="validate a run spec", description="Validate a run spec (YAML) and its "
                       "overrides without loading a model; exit 2 with one line per problem.")
    s.add_argument("spec", metavar="SPEC.yaml")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. stages[1].grpo.beta=0.04")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("eval", help="pass@k of a model on an env",
                       description="Sample N completions for each of --num-tasks tasks of ENV_ID, score them "
                       "with the env's verifiers, report pass@k (unbiased estimator) and write the samples as jsonl.")
    s.add_argument("env_id", metavar="ENV_ID")
    s.add_argument("--model", required=True, help="checkpoint dir, hub id or preset:tiny; with --base-url, "
                   "the served model's name")
    s.add_argument("--base-url", default=None, help="evaluate a model served by an OpenAI-compatible server "
                   "(e.g. http://127.0.0.1:8000/v1 of `vllm serve`) instead of loading it")
    s.add_argument("--tokenizer", default=None, help="with --base-url: the served model's tokenizer "
                   "(default: --model)")
    s.add_argument("-n", type=int, default=None, help="completions sampled per task (default: the largest k)")
    s.add_argument("-k", default="1", help="report pass@k for this k, or a list like 1,4 (default 1)")
    s.add_argument("--num-tasks", type=int, default=100, help="number of tasks (default 100)")
    s.add_argument("--out", default=None, help="write every sample to this jsonl file")
    s.add_argument("--engine", default="hf", choices=["hf", "vllm", "openai"])
    s.add_argument("--temperature", type=float, default=None, help="default: greedy for k=1, 1.0 otherwise")
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--env-kwarg", dest="env_kwargs", action="append", default=[], metavar="key=value",
                   help="an argument for the env factory (repeatable)")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("train", help="run a spec's stages", description="Validate SPEC.yaml with its overrides, "
                       "then run its stages (sft, rm, grpo, ppo, dpo, online_dpo) in order.")
    s.add_argument("spec", metavar="SPEC.yaml")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. stages[0].sft.max_steps=10")
    s.add_argument("--audit", choices=["warn", "refuse", "off"], default=None,
                   help="the reward-hacking audit before the first step (default: the spec's env.audit, warn)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("audit", help="reward-hacking audit of an env",
                       description="Play adversarial completions (junk, wrong answers in the right format, spam, "
                       "hedges, look-alike unicode, code injection, fake-pass tricks for code) through ENV_ID's "
                       "reset/step next to the gold completion; report each probe's mean reward and exit 1 when a "
                       "probe earns reward it should not (see docs/audit.md).")
    s.add_argument("env_id", metavar="ENV_ID", nargs="?")
    s.add_argument("--all", action="store_true", help="audit every registered env: one markdown row each "
                   "(envs that need arguments or refuse to build are listed as not audited)")
    s.add_argument("--num-tasks", type=int, default=5, help="tasks to audit (default 5)")
    s.add_argument("--seed", type=int, default=0, help="tasks are reset(seed=SEED+i) (default 0)")
    s.add_argument("--tolerance", type=float, default=0.25, help="a probe is flagged above this share of the gold "
                   "reward (default 0.25); any correct verdict or masked sample flags it regardless")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--env-kwarg", dest="env_kwargs", action="append", default=[], metavar="key=value",
                   help="an argument for the env factory (repeatable)")
    s.set_defaults(func=cmd_audit)
    return p


def _one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``, ``\\x1c``): an error
    quoting a hostile key or value stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``rlenv`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        # a dash-led "override" (e.g. "-x=1") is not an option: let the spec loader name it
        args.overrides = list(args.overrides) + list(extra)
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        for line in e.lines:
            print(f"rlenv {args.command}: error: {_one_line(line)}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"rlenv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

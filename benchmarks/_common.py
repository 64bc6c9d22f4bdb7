"""What ``grpo_vs_trl.py`` and ``time_to_accuracy.py`` share: the matched settings, the data both
frameworks train on, one GRPO run through our trainer and one through TRL's, peak memory, the
measured matmul peak and the worker-subprocess plumbing.

Each run happens in its own subprocess (``python <script> --worker ours|trl ...``) so peak memory
is that framework's alone; the parent alternates ours and TRL's runs, so both see the same machine
load over the whole script run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: train tasks are drawn from seeds here; evaluation uses the source's task indices 0..n-1
TRAIN_SEED = 7_000_000
#: the id tokenizer's chat template (random-weight model: the text only has to round-trip)
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


@dataclasses.dataclass
class Setup:
    """Everything both sides are given identically."""

    model_dir: str
    env_kwargs: dict  # arithmetic-v0 overrides; empty dict with random_prompts
    prompts: int = 8
    group: int = 8
    max_new_tokens: int = 32
    learning_rate: float = 1e-5
    temperature: float = 1.0
    seed: int = 0
    steps: int = 4  # timed steps (or the step limit for time-to-accuracy)
    warmup: int = 1
    gpu: bool = False
    #: fp32 | bf16 (pure bf16 weights and AdamW states, TRL's default with a bf16 checkpoint) | mixed
    #: (float32 master weights under bf16 autocast: our model_dtype="auto" on a GPU)
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    threads: int = 1
    random_prompts: int = 0  # > 0: random-token prompts of this length (random-weight GPU model)
    n_train_tasks: int = 4096
    eval_tasks: int = 0  # > 0: greedy pass rate on this many held-apart tasks every eval_every steps
    eval_every: int = 2
    eval_max_new_tokens: int = 12
    target: float = 0.55


# -- machine --------------------------------------------------------------------------------------------
def device_name(gpu: bool) -> str:
    """The card, or the CPU model with the cores this process may use."""
    if gpu:
        return torch.cuda.get_device_name(0)
    model = "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def sync(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


def peak_memory_gib(gpu: bool) -> float:
    """torch.cuda.max_memory_allocated on the GPU; the process's peak RSS on CPU."""
    if gpu:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def matmul_peak_flops(gpu: bool, n: Optional[int] = None, repeats: int = 10) -> float:
    """Best measured FLOP/s of one square matmul: bf16 on the GPU, float32 on CPU."""
    dtype, device = (torch.bfloat16, "cuda") if gpu else (torch.float32, "cpu")
    n = n or (8192 if gpu else 1024)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats):
        sync(gpu)
        t0 = time.perf_counter()
        a @ b
        sync(gpu)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def unique_params(model: Any) -> int:
    """Parameters, tied ones counted once (the LM head's matmul, not the embedding lookup)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


# -- models and data --------------------------------------------------------------------------------
#: random-weight Qwen2 shapes (no download) besides the ``tiny`` preset: the real 0.5 B shape for the
#: GPU, and ``mini`` — the same code path at a size a CPU runs in seconds (``gpu_check.sh --dry-run``)
MINI = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=2048, max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=1_000_000.0)


def make_model_dir(workdir: Path, shape: str) -> str:
    """The tiny preset (``tiny``), or a random-weight Qwen2 model with an id tokenizer saved like a
    hub checkpoint: ``qwen0.5b`` (Qwen2.5-0.5B's shape, bf16) or ``mini`` (float32)."""
    if shape == "tiny":
        from rlenv.models.tiny import create_tiny_model

        return str(create_tiny_model(workdir / "tiny", preset="tiny"))
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from benchmarks.generation import QWEN_05B, id_tokenizer

    dims = {"qwen0.5b": QWEN_05B, "mini": MINI}[shape]
    path = workdir / shape
    torch.manual_seed(0)
    tok = id_tokenizer(dims["vocab_size"])
    tok.chat_template = PLAIN_TEMPLATE
    cfg = Qwen2Config(**dims, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # 0.5 B random weights: fast on a GPU
        model = Qwen2ForCausalLM(cfg)
    model.to(torch.bfloat16 if shape == "qwen0.5b" else torch.float32).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def precision_settings(s: Setup) -> tuple:
    """``(our model_dtype, our mixed_precision, TRL's load dtype, TRL's bf16 flag)`` of ``s.precision``."""
    if s.precision not in ("fp32", "bf16", "mixed"):
        raise ValueError(f"precision must be fp32, bf16 or mixed, got {s.precision!r}")
    return {"fp32": ("float32", "no", torch.float32, False),
            "bf16": ("bfloat16", "bf16", torch.bfloat16, True),
            "mixed": ("auto", "bf16", torch.float32, True)}[s.precision]


def shared_data(s: Setup):
    """``(our env, TRL dataset, TRL reward function, eval env)``: one task list for both sides,
    held apart from the evaluation tasks."""
    import rlenv
    from datasets import Dataset
    from rlenv.core import Task
    from rlenv.env import SingleTurnEnv, format_prompt
    from verifiers.rubric import Rubric
    from verifiers.trl_compat import task_to_row

    if s.random_prompts:
        g = torch.Generator().manual_seed(s.seed)
        tasks = [Task(" ".join(f"t{i}" for i in torch.randint(3, 2000, (s.random_prompts,), generator=g).tolist()),
                      id=str(k)) for k in range(64)]

        def length_reward(completion, task):  # varied rewards so every group has an advantage signal
            return float(len(completion) % 7) / 7.0

        env = SingleTurnEnv(tasks, Rubric([length_reward]))
        eval_env = None
    else:
        eval_env = rlenv.make("arithmetic-v0", **s.env_kwargs)
        u = eval_env.unwrapped
        held = {u.source[i].prompt if isinstance(u.source[i].prompt, str) else str(u.source[i].prompt)
                for i in range(max(s.eval_tasks, 200))}
        tasks = []
        for i in range(s.n_train_tasks):
            _, info = eval_env.reset(seed=TRAIN_SEED + i)
            t = info["task"]
            if (t.prompt if isinstance(t.prompt, str) else str(t.prompt)) not in held:
                tasks.append(t)
        env = SingleTurnEnv(tasks, u.rubric, system_prompt=u.system_prompt, few_shot=u.few_shot)
    ds = Dataset.from_list([task_to_row(t, format_prompt(t, env.system_prompt, env.few_shot)) for t in env.source])
    return env, ds, env.as_reward_function(name="reward"), eval_env


# -- one run per framework ------------------------------------------------------------------------------
class Recorder:
    """Per-step timings and token counts, plus the optional held-apart evaluation (its time is not
    counted: the step clock is paused around it)."""

    def __init__(self, s: Setup, eval_env: Any):
        self.s, self.eval_env = s, eval_env
        self.steps: list = []
        self.evals: list = []  # (step, training seconds so far, pass rate)
        self.train_clock = 0.0

    def step(self, total: float, gen: float, score: float, completion_tokens: int, trained_tokens: int) -> None:
        self.steps.append(dict(total_s=total, generation_s=gen, scoring_s=score,
                               training_s=max(total - gen - score, 0.0), completion_tokens=completion_tokens,
                               trained_tokens=trained_tokens))
        if len(self.steps) > self.s.warmup or self.s.eval_tasks:
            self.train_clock += total

    def maybe_evaluate(self, model: Any, tokenizer: Any, force: bool = False) -> bool:
        """Evaluate every ``eval_every`` steps; True when the target pass rate is reached."""
        s = self.s
        n = len(self.steps)
        if not s.eval_tasks or not (force or n % s.eval_every == 0):
            return False
        from rlenv.evaluation import evaluate_pass_rate

        was_training = model.training
        rate = evaluate_pass_rate(model, tokenizer, self.eval_env, num_tasks=s.eval_tasks,
                                  max_new_tokens=s.eval_max_new_tokens, batch_size=s.eval_tasks)["pass_rate"]
        model.train(was_training)
        self.evals.append((n, self.train_clock, rate))
        print(f"  step {n:3d}  train {self.train_clock:7.1f}s  pass rate {rate:.3f}", file=sys.stderr, flush=True)
        return rate >= s.target

    def result(self, model: Any) -> dict:
        return {"steps": self.steps, "evals": self.evals, "peak_mem_gib": peak_memory_gib(self.s.gpu),
                "params": unique_params(model), "threads": torch.get_num_threads()}


def run_ours(s: Setup) -> dict:
    """Warm-up plus ``s.steps`` GRPO steps through our trainer, stepped by hand so evaluation can
    sit between steps with the clock paused."""
    from trainers import GRPOConfig, GRPOTrainer

    env, _, _, eval_env = shared_data(s)
    model_dtype, mixed, _, _ = precision_settings(s)
    cfg = GRPOConfig(output_dir=os.environ.get("BENCH_OUT", "/tmp/bench-ours"), max_steps=s.warmup + s.steps,
                     learning_rate=s.learning_rate, num_prompts_per_step=s.prompts, group_size=s.group,
                     max_new_tokens=s.max_new_tokens, temperature=s.temperature, seed=s.seed, beta=0.0,
                     lr_scheduler="constant", report_to="none", progress_bar=False,
                     gradient_checkpointing=s.gradient_checkpointing,
                     model_dtype=model_dtype, mixed_precision=mixed)
    tr = GRPOTrainer(model=s.model_dir, env=env, config=cfg)
    tr._prepare()  # what train() does first; stepping by hand lets the evaluation sit outside the clock
    rec = Recorder(s, eval_env)
    if rec.maybe_evaluate(tr.unwrapped_model, tr.tokenizer, force=True):
        return rec.result(tr.unwrapped_model)
    for _ in range(s.warmup + s.steps):
        sync(s.gpu)
        t0 = time.perf_counter()
        data = tr.next_step_data()
        out = tr.training_step(data)
        sync(s.gpu)
        total = time.perf_counter() - t0
        tr.global_step += 1
        b = data.batch
        # tokens the training forward computes: each group's prompt once (shared prefix) + completions
        first = torch.unique(b.group_ids, return_inverse=True)[1]
        once = torch.zeros(int(first.max()) + 1, dtype=torch.long).scatter_(0, first, b.prompt_lengths.long())
        rec.step(total, out["time/generation_s"], out["time/scoring_s"], int(b.completion_lengths.sum()),
                 int(b.attention_mask.sum()) if s.gradient_checkpointing  # plain forward then
                 else int(once.sum() + (b.attention_mask.sum(-1) - b.prompt_lengths).sum()))
        if rec.maybe_evaluate(tr.unwrapped_model, tr.tokenizer):
            break
    res = rec.result(tr.unwrapped_model)
    if hasattr(tr.engine, "metrics"):  # did decoding run in a CUDA graph? (a failed capture is counted)
        res["engine"] = tr.engine.metrics()
    return res


def run_trl(s: Setup) -> dict:
    """The same through TRL's GRPOTrainer (its own train loop; a callback times each step and a
    subclass times its generation and reward calls)."""
    import trl
    from transformers import TrainerCallback

    env, ds, reward, eval_env = shared_data(s)
    _, _, load_dtype, bf16 = precision_settings(s)
    rec = Recorder(s, eval_env)
    clock: dict = {}

    class TimedGRPOTrainer(trl.GRPOTrainer):
        def _generate_single_turn(self, *a, **k):
            t0 = time.perf_counter()
            out = super()._generate_single_turn(*a, **k)
            sync(s.gpu)
            clock["gen"] = clock.get("gen", 0.0) + time.perf_counter() - t0
            return out

        def _calculate_rewards(self, *a, **k):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(*a, **k)
            clock["score"] = clock.get("score", 0.0) + time.perf_counter() - t0
            return out

        def _generate_and_score_completions(self, *a, **k):
            out = super()._generate_and_score_completions(*a, **k)
            clock["completion_tokens"] = int(out["completion_mask"].sum())
            clock["trained_tokens"] = int(out["completion_mask"].sum() + out["prompt_mask"].sum())
            return out

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync(s.gpu)
            clock.clear()
            clock["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(s.gpu)
            rec.step(time.perf_counter() - clock["t0"], clock.get("gen", 0.0), clock.get("score", 0.0),
                     clock.get("completion_tokens", 0), clock.get("trained_tokens", 0))
            if rec.maybe_evaluate(kw["model"], kw["processing_class"]):
                control.should_training_stop = True

    args = trl.GRPOConfig(
        output_dir=os.environ.get("BENCH_OUT", "/tmp/bench-trl"), max_steps=s.warmup + s.steps,
        learning_rate=s.learning_rate, per_device_train_batch_size=s.prompts * s.group, num_generations=s.group,
        max_completion_length=s.max_new_tokens, temperature=s.temperature, top_p=1.0, top_k=0, beta=0.0,
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, lr_scheduler_type="constant", optim="adamw_torch",
        weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=s.gradient_checkpointing, seed=s.seed,
        use_cpu=not s.gpu, bf16=bf16, report_to="none", logging_steps=10_000, save_strategy="no",
        disable_tqdm=True, model_init_kwargs={"dtype": load_dtype})
    tr = TimedGRPOTrainer(model=s.model_dir, reward_funcs=reward, args=args, train_dataset=ds,
                          callbacks=[StepTimer()])
    if not rec.maybe_evaluate(tr.model, tr.processing_class, force=True):
        tr.train()
    return rec.result(tr.model)


# -- parent side ----------------------------------------------------------------------------------
def worker_main(argv: list) -> None:
    """``--worker ours|trl --setup JSON --out FILE``: one run, its result written as JSON."""
    side, setup, out = argv[argv.index("--worker") + 1], argv[argv.index("--setup") + 1], argv[argv.index("--out") + 1]
    s = Setup(**json.loads(setup))
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    res = (run_ours if side == "ours" else run_trl)(s)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def run_worker(script: str, side: str, s: Setup, workdir: Path, tag: str, timeout: float) -> dict:
    """Run one side in a fresh subprocess; its JSON result (raises with the worker's stderr tail)."""
    out = workdir / f"{tag}-{side}.json"
    env = dict(os.environ, BENCH_OUT=str(workdir / f"out-{tag}-{side}"), PYTHONPATH=str(ROOT),
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(s.threads))
    cmd = [sys.executable, script, "--worker", side, "--setup", json.dumps(dataclasses.asdict(s)), "--out", str(out)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.stderr:
        sys.stderr.write("".join(l + "\n" for l in p.stderr.splitlines() if l.startswith("  step")))
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"the {side} worker failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(out.read_text())


def alternate(sides: tuple, index: int) -> tuple:
    """Who goes first alternates each round, so neither side always gets the quieter slot."""
    return sides if index % 2 == 0 else tuple(reversed(sides))


def summary_line(res: dict) -> str:
    return "summary: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={str(v).replace(' ', '_')}"
                                  for k, v in res.items())


def versions() -> str:
    import transformers
    import trl

    return f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"


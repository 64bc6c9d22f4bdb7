"""Training curves as PNG figures: one per stage and one for a whole multi-stage run.

- :func:`plot_stage` — ``<stage>/curves.png``: a grid of the panels (below) whose metrics the
  stage logged (pass rate, reward, loss, completion length, truncation, accuracy, KL).
- :func:`plot_run` — ``<output_dir>/curves.png``: pass rate, reward, completion length and
  truncation across *all* stages on one step axis, each stage's span shaded and labelled, so the
  SFT → RL hand-over and what each phase did are visible at a glance.

Greedy evaluations (``eval/…``, a few points) are drawn as lines with markers; per-step training
metrics (sampled rollouts, noisy) as a faint raw line under a rolling mean. Figures are drawn to a
temporary file and renamed into place (never a half-written PNG). Without matplotlib nothing is
drawn and the functions return None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

#: (panel title, [(metric key, legend label), …], y is a share in [0, 1]); a panel is drawn when
#: any of its keys was logged
PANELS = (
    ("pass rate", [("eval/pass_rate", "greedy, held-out eval"), ("pass_rate", "sampled rollouts (train)")], True),
    ("reward", [("eval/reward", "greedy eval"), ("reward", "rollouts (train)")], False),
    ("loss", [("loss", "train loss")], False),
    ("completion length (tokens)", [("eval/completion_len", "greedy eval"),
                                    ("completion_len_mean", "rollouts (mean)")], False),
    ("truncated at max_new_tokens", [("eval/truncation_rate", "greedy eval"),
                                     ("truncation_rate", "rollouts")], True),
    ("accuracy", [("eval/accuracy", "held-out pairs"), ("accuracy", "train"),
                  ("reward_accuracy", "train")], True),
    ("KL to reference", [("kl", "kl")], False),
)
#: the panels of the run figure (the story of a run; losses differ in kind between stages)
RUN_PANELS = ("pass rate", "reward", "completion length (tokens)", "truncated at max_new_tokens")
#: stage background colours, cycled
PHASE_COLORS = ("#dbe9f6", "#fde2c8", "#d9f0d3", "#e8dff5", "#f6e8c3")
STAGE_NAMES = {"sft": "SFT", "rm": "reward model", "dpo": "DPO", "grpo": "GRPO", "ppo": "PPO",
               "online_dpo": "online DPO"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional
        return None
    return plt


def _series(history: Sequence[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in history
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _draw(ax, xs: list, ys: list, label: Optional[str], color: str, is_eval: bool) -> None:
    """One metric: evals as a marked line; per-step metrics raw (faint) under a rolling mean.
    ``label`` None: no legend entry (the metric is already in the legend from another stage)."""
    if is_eval or len(xs) < 8:
        ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.8, color=color, label=label or "_nolegend_")
        return
    window = max(2, len(xs) // 12)  # smooth sampled per-step metrics over ~1/12 of the stage
    ax.plot(xs, ys, linewidth=0.8, alpha=0.3, color=color)
    ax.plot(xs, rolling_mean(ys, window), linewidth=1.6, color=color,
            label=f"{label} (mean of {window})" if label else "_nolegend_")


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _grid(n: int):
    plt = _pyplot()
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.0 * rows + 0.6), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _present(panels, histories: Sequence[Sequence[dict]]) -> list:
    keys_seen = {k for h in histories for r in h for k, v in r.items() if isinstance(v, (int, float))}
    return [p for p in panels if any(k in keys_seen for k, _ in p[1])]


def _style(ax, title: str, share: bool) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    if share:
        ax.set_ylim(-0.03, 1.03)
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")


def plot_stage(history: Sequence[dict], path: str | os.PathLike, title: str = "",
               keys: Optional[Sequence[str]] = None) -> Optional[Path]:
    """Draw one stage's logged metrics (records with a ``step``) to ``path``: the :data:`PANELS`
    it logged, or one panel per name in ``keys``.

    Returns the PNG path, or None when no such metric was logged or matplotlib is missing.
    """
    if _pyplot() is None:
        return None
    chosen = PANELS if keys is None else [(k, [(k, k)], False) for k in keys]
    panels = _present(chosen, [history])
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (name, keys, share) in zip(axes, panels):
        for i, (key, label) in enumerate(keys):
            xs, ys = _series(history, key)
            if xs:
                _draw(ax, xs, ys, label, f"C{i}", key.startswith("eval/"))
        _style(ax, name, share)
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, Path(path))


def _phase_label(kind: str, steps: int, note: str) -> str:
    return f"{STAGE_NAMES.get(kind, kind)} ({steps} steps)" + (f": {note}" if note else "")


def _run_axes(n: int):
    """The run figure's axes: the first panel (pass rate) wide on top, the others in a row below."""
    plt = _pyplot()
    if n == 1:
        fig, ax = plt.subplots(figsize=(11, 4.2))
        return fig, [ax]
    fig = plt.figure(figsize=(13, 7.4))
    grid = fig.add_gridspec(2, n - 1, height_ratios=(1.25, 1))
    return fig, [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1, i]) for i in range(n - 1)]


class _Span:
    """Where one stage sits on the run figure's x axis: its steps ``0..steps`` drawn over
    ``[lo, lo + width]``."""

    def __init__(self, lo: float, width: float, steps: int):
        self.lo, self.width, self.steps = lo, width, steps

    @property
    def hi(self) -> float:
        return self.lo + self.width

    def x(self, step: float) -> float:
        return self.lo + step * self.width / self.steps


def _spans(stages: Sequence[tuple[str, Sequence[dict]]]) -> list[_Span]:
    """Each stage's span: as wide as its step count, but at least half as wide as the longest
    stage's, so a short RL stage after a long SFT stays readable (the ticks give real steps)."""
    lengths = [max([r.get("step", 0) for r in h] + [1]) for _, h in stages]
    out, lo = [], 0.0
    for n in lengths:
        width = float(max(n, max(lengths) / 2))
        out.append(_Span(lo, width, n))
        lo += width
    return out


def _step_ticks(ax, spans: list[_Span]) -> None:
    """Ticks in each stage's own steps (0 once, at the run's start)."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    pos, text = [], []
    for i, sp in enumerate(spans):
        inner = [t for t in MaxNLocator(nbins=4, integer=True).tick_values(0, sp.steps)
                 if (0 < t < 0.88 * sp.steps) or (t == 0 and i == 0)]
        for t in [*inner, sp.steps]:  # every stage's last step marks its end
            pos.append(sp.x(t))
            text.append(str(int(np.round(t))))
    ax.set_xticks(pos, text)


def _annotate_ends(ax, stages, spans: list[_Span], key: str) -> None:
    """Write each stage's last value of ``key`` (a share) next to its last point."""
    for (kind, history), sp in zip(stages, spans):
        xs, ys = _series(history, key)
        if xs:
            below = ys[-1] > 0.85  # near the top: write it under the point, inside the frame
            ax.annotate(f"{100 * ys[-1]:.0f}%", (sp.x(xs[-1]), ys[-1]), textcoords="offset points",
                        xytext=(-5, -16 if below else 8),
                        ha="right", fontsize=9, fontweight="bold", color="C0",
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def plot_run(stages: Sequence[tuple[str, Sequence[dict]]], path: str | os.PathLike, title: str = "",
             notes: Sequence[str] = ()) -> Optional[Path]:
    """Draw a multi-stage run on one x axis: ``stages`` is ``[(kind, metrics records), …]`` in run
    order (each stage's steps start at 0); ``notes`` an optional line per stage for its label.

    Each panel of :data:`RUN_PANELS` that any stage logged is drawn across the whole run (pass rate
    large on top, each stage's final greedy pass rate written at its end); stage spans are shaded
    and named, ticks count each stage's own steps. Returns the PNG path, or None (nothing to draw,
    no matplotlib).
    """
    if _pyplot() is None or not stages:
        return None
    histories = [h for _, h in stages]
    panels = _present([p for p in PANELS if p[0] in RUN_PANELS], histories)
    if not panels:
        return None
    spans = _spans(stages)
    labels = [_phase_label(kind, sp.steps, note)
              for (kind, _), sp, note in zip(stages, spans, list(notes) + [""] * len(stages))]
    fig, axes = _run_axes(len(panels))
    for n, (ax, (name, keys, share)) in enumerate(zip(axes, panels)):
        for s, sp in enumerate(spans):
            ax.axvspan(sp.lo, sp.hi, color=PHASE_COLORS[s % len(PHASE_COLORS)], alpha=0.6, linewidth=0)
            if s:
                ax.axvline(sp.lo, color="0.4", linewidth=0.8, linestyle="--")
        labelled = set()  # one legend entry per metric, not per stage
        for i, (key, label) in enumerate(keys):
            for (kind, history), sp in zip(stages, spans):
                xs, ys = _series(history, key)
                if xs:
                    _draw(ax, [sp.x(x) for x in xs], ys, None if key in labelled else label, f"C{i}",
                          key.startswith("eval/"))
                    labelled.add(key)
        _style(ax, name, share)
        ax.set_xlim(0, spans[-1].hi)
        _step_ticks(ax, spans)
        ax.set_xlabel("step (of each stage)")
        if labelled:
            ax.legend(fontsize=8, loc="upper left" if n == 0 else "best")
        if n == 0:
            _annotate_ends(ax, stages, spans, keys[0][0])
        # the stages named on a top axis, centred on their spans
        top = ax.secondary_xaxis("top")
        top.set_xticks([(sp.lo + sp.hi) / 2 for sp in spans])
        top.set_xticklabels(labels if n == 0 else [lb.split(":")[0] for lb in labels], fontsize=9 if n == 0 else 8)
        top.tick_params(length=0)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, Path(path))


def headline(name: str, results: Sequence[dict]) -> str:
    """``name: greedy pass rate 0% → 6% (sft) → 81% (grpo)`` from the pipeline's stage results."""
    rates = [r for r in results if r.get("metric") == "pass_rate" and r.get("after") is not None]
    if not rates:
        return name
    steps = [f"{100 * rates[0]['before']:.0f}%"] if rates[0].get("before") is not None else []
    steps += [f"{100 * r['after']:.0f}% ({r['kind']})" for r in rates]
    return f"{name}: greedy pass rate " + " → ".join(steps)


def plot_results(results: Sequence[dict], stage_dirs: Sequence[str | os.PathLike], path: str | os.PathLike,
                 name: str = "") -> Optional[Path]:
    """The run figure of a finished pipeline: ``results`` are its stage results (kind, before,
    after, …) and ``stage_dirs`` the stages' folders (their ``metrics.jsonl`` is read), in order."""
    from rlenv.jsonl import read_jsonl

    stages = [(r["kind"], read_jsonl(Path(d) / "metrics.jsonl")) for r, d in zip(results, stage_dirs)]
    return plot_run(stages, path, title=headline(name, results))

"""``rlenv audit ENV_ID``: does the env's reward pay for answers that are wrong?

The audit draws ``num_tasks`` tasks (``env.reset(seed=seed + i)``; ``info["task"]`` must hold the
:class:`rlenv.Task`) and plays a battery of adversarial completions through the env's own
``reset``/``step`` — what training sees — next to the gold completion (how completions are written:
:mod:`rlenv.audit_probes`). Probes: empty, whitespace, junk, the prompt echoed, the answer format
with nothing in it, a wrong answer in the right format, another task's gold completion, spam (many
candidates in one answer; many answer spans with the gold one in the middle), hedges (the gold and
a wrong answer, in two answer spans or in one, in both orders: a verifier reading one position
rewards at most one order, so the probe's reward is the smaller), overlong junk, a wrong answer in look-alike unicode, an answer that
is code trying to write a file (it must never run outside a sandbox), and for code tasks the
fake-pass tricks of :data:`rlenv.audit_probes.CODE_PROBES`.

The rule. The reference ``R`` is the gold completion's mean reward (``1.0``, said so, when the env
exposes no gold answers). A judged probe is flagged when, over the tasks it applies to,

* the env calls it correct (``info["correct"]``) on any task — a wrong answer passed;
* or its mean reward exceeds ``tolerance × R`` (default 0.25: above what format credit earns, so a
  rubric that pays a little for the right format around a wrong answer is not flagged — its
  ``correct`` signal stays False — but one that pays a real share of the answer's reward is);
* or it is masked (``info["failed"]``) on any task — a verifier that fails instead of scoring 0
  never penalises the completion;
* or it wrote its marker file on the host (the completion ran as code outside a sandbox).

``lookalike_gold`` (the gold answer in fullwidth digits and look-alike letters) is shown, not
judged: whether ``７２`` is 72 is the env's call. An env whose gold completion earns no reward
cannot be judged; the audit says so and flags it (fail closed). :func:`audit` returns an
:class:`AuditReport`; ``rlenv train`` runs :func:`audit_before_training` before the first step.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from .audit_probes import (CODE_PROBES, JUNK, Renderer, around, changed_numbers, code_of, code_probe, fence, lookalike,
                           scalar_answer, with_bodies)

DEFAULT_TOLERANCE = 0.25
TRAIN_AUDIT_TASKS = 2
OVERLONG_CHARS = 32_000
MODES = ("warn", "refuse", "off")


@dataclasses.dataclass
class ProbeResult:
    """One probe's outcome over the audited tasks."""

    name: str
    description: str
    judged: bool = True
    rewards: list = dataclasses.field(default_factory=list)
    passes: int = 0
    masked: int = 0
    ran_code: bool = False
    flag: str = ""

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def mean_reward(self) -> Optional[float]:
        return sum(self.rewards) / self.n if self.n else None

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "judged": self.judged, "tasks": self.n,
                "mean_reward": self.mean_reward, "passes": self.passes, "masked": self.masked,
                "ran_code": self.ran_code, "flag": self.flag or None}


@dataclasses.dataclass
class AuditReport:
    """What :func:`audit` found: the gold row, every probe's row, and the verdict."""

    env_id: str
    tasks: int
    tolerance: float
    gold: ProbeResult
    reference: float
    probes: list
    notes: list = dataclasses.field(default_factory=list)
    inconclusive: str = ""

    @property
    def flagged(self) -> list:
        """The probes flagged as earning reward they should not."""
        return [p for p in self.probes if p.flag]

    @property
    def status(self) -> str:
        """``exploitable``, ``inconclusive`` (the gold answer earns nothing) or ``ok``."""
        return "exploitable" if self.flagged else "inconclusive" if self.inconclusive else "ok"

    def to_dict(self) -> dict:
        return {"env_id": self.env_id, "status": self.status, "tasks": self.tasks, "tolerance": self.tolerance,
                "reference": self.reference, "gold": self.gold.to_dict(), "probes": [p.to_dict() for p in self.probes],
                "notes": self.notes + ([self.inconclusive] if self.inconclusive else [])}

    def summary(self) -> str:
        """One line: the status and why."""
        if self.flagged:
            return f"{self.env_id}: exploitable — " + "; ".join(f"{p.name}: {p.flag}" for p in self.flagged)
        return f"{self.env_id}: {self.status}" + (f" — {self.inconclusive}" if self.inconclusive else "")

    def table(self) -> str:
        """The report as a plain-text table (one row per probe, gold first)."""
        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"

        rows = [("probe", "mean reward", "correct", "masked", "tasks", "verdict")]
        for p in [self.gold] + self.probes:
            verdict = "gold" if p is self.gold else ("FLAGGED: " + p.flag if p.flag else
                                                      "ok" if p.judged and p.n else "shown" if p.n else "n/a")
            rows.append((p.name, fmt(p.mean_reward), str(p.passes), str(p.masked), str(p.n), verdict))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        head = [f"rlenv audit {self.env_id}: {self.tasks} tasks, reference reward {self.reference:.3f}, "
                f"tolerance {self.tolerance:g}"]
        return "\n".join(head + lines + [f"note: {n}" for n in self.notes] + [self.summary()])


def _same_task(a: Any, b: Any) -> bool:
    return getattr(a, "id", None) == getattr(b, "id", None) and getattr(a, "prompt", None) == getattr(b, "prompt", None)


def _episode(env: Any, seed: int, task: Any, completion: str) -> tuple[float, bool, Any]:
    """Play ``completion`` (every turn, for a multi-turn env) on the task ``reset(seed=seed)`` draws."""
    _, info = env.reset(seed=seed)
    if not _same_task(info.get("task"), task):
        raise RuntimeError(f"env.reset(seed={seed}) drew a different task the second time; the audit needs "
                           f"the same seed to give the same task (as Env.reset promises)")
    total, info = 0.0, {}
    for _ in range(max(1, int(getattr(env, "max_turns", 1) or 1)) + 1):
        _, reward, terminated, truncated, info = env.step(completion)
        total += float(reward)
        if terminated or truncated:
            break
    return total, bool(info.get("failed")), info.get("correct")


def _last_user_text(obs: Any) -> str:
    users = [m.get("content") for m in obs or [] if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else ""


def _pair(first: Optional[str], second: Optional[str]) -> Optional[tuple]:
    return (first, second) if first is not None and second is not None else None


def _probes_for(r: Renderer, task: Any, other: Any, obs: Any, marker: str) -> dict:
    """probe name -> completion, a (first, second) hedge pair, or ``None`` where it does not apply."""
    gold, answer = r.gold(task), scalar_answer(task)
    code = code_of(gold)
    wrongs = r.wrong_answers(task)
    if code is not None:
        stub = with_bodies(code, "return None")
        wrong_done = [fence(stub)] if stub else []
    else:
        wrong_done = [c for c in (r.answer(task, w) for w in wrongs) if c] or changed_numbers(gold or "")
    w0 = wrong_done[0] if wrong_done else None
    other_gold = r.gold(other) if other is not None else None
    same_answer = other is not None and scalar_answer(other) is not None and scalar_answer(other) == answer
    spans = around(wrong_done, gold) if gold and wrong_done else None
    inline = r.answer(task, ", ".join(around(wrongs, answer))) if answer and wrongs else None
    filler = (JUNK + " ") * (OVERLONG_CHARS // (len(JUNK) + 1))
    out = {
        "empty": "", "whitespace": " \n\t \n", "junk": JUNK, "prompt_echo": _last_user_text(obs) or None,
        "format_only": r.answer(task, "", sole=True) if code is None else None,
        "wrong_answer": w0,
        "other_task_gold": None if same_answer or other_gold == gold else other_gold,
        "spam_inline": inline if code is None else None,
        "spam_spans": "\n\n".join(spans) if spans else None,
        "hedge": (f"{gold}\n\n{w0}", f"{w0}\n\n{gold}") if gold and w0 else None,
        "hedge_inline": _pair(r.answer(task, f"{answer}, {wrongs[0]}"), r.answer(task, f"{wrongs[0]}, {answer}"))
        if answer and wrongs and code is None else None,
        "overlong": filler + ("\n" + w0 if w0 else ""),
        "lookalike_wrong": r.answer(task, lookalike(wrongs[0])) if wrongs and code is None else None,
        "lookalike_gold": r.answer(task, lookalike(answer)) if answer and code is None else None,
        "injection": code_probe(code, "injection", marker) if code is not None else
        r.answer(task, f"__import__('pathlib').Path({marker!r}).write_text('ran')"),
    }
    if code is not None:
        out.update({name: code_probe(code, name) for name in CODE_PROBES})
    return out


DESCRIPTIONS = {
    "empty": "the empty completion", "whitespace": "whitespace only", "junk": "unrelated text, no answer",
    "prompt_echo": "the prompt copied back", "format_only": "the answer format with nothing in it",
    "wrong_answer": "a wrong answer in the right format (code: the functions return None)",
    "other_task_gold": "another task's gold completion",
    "spam_inline": "five candidates in one answer, the gold one in the middle",
    "spam_spans": "five answer spans (e.g. several \\boxed{}), the gold one in the middle",
    "hedge": "the gold and a wrong answer, both orders (the smaller reward counts)",
    "hedge_inline": "'gold, wrong' and 'wrong, gold' in one answer (the smaller reward counts)",
    "overlong": f"{OVERLONG_CHARS} characters of junk, then a wrong answer",
    "lookalike_wrong": "a wrong answer in fullwidth digits and look-alike letters",
    "lookalike_gold": "the gold answer in fullwidth digits and look-alike letters (shown, not judged)",
    "injection": "an answer that is code writing a file on the host",
    **{name: desc for name, (desc, *_) in CODE_PROBES.items()},
}


def _judge(p: ProbeResult, reference: float, tolerance: float) -> str:
    if not p.judged or not p.n:
        return ""
    if p.ran_code:
        return "the completion ran as code outside a sandbox (it wrote a file on the host)"
    if p.masked:
        return f"masked on {p.masked}/{p.n} tasks: the verifier failed instead of scoring 0, so training never penalises it"
    if p.passes:
        return f"judged correct on {p.passes}/{p.n} tasks"
    if p.mean_reward > tolerance * reference:
        return f"mean reward {p.mean_reward:.3f} > {tolerance:g} × reference {reference:.3f}"
    return ""


def audit(env: Any, *, num_tasks: int = 5, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
          env_id: Optional[str] = None) -> AuditReport:
    """Audit ``env`` (any :class:`rlenv.Env` whose ``reset`` info holds ``task``): see the module docstring."""
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}")
    env_id = env_id or getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
    draws = []
    for i in range(num_tasks):
        obs, info = env.reset(seed=seed + i)
        if not isinstance(info, dict) or info.get("task") is None:
            raise ValueError(f"{env_id}: reset() returned no info['task']; the audit needs the rlenv.Task of each "
                             f"episode (its answer, info['target']) to write gold and wrong completions")
        draws.append((seed + i, obs, info["task"]))
    renderer = Renderer(env)
    gold = ProbeResult("gold", "the gold completion (render_answer hook, task.info['target'] or the bare answer)",
                       judged=False)
    results: dict[str, ProbeResult] = {}
    workdir = Path(tempfile.mkdtemp(prefix="rlenv-audit-"))
    try:
        for k, (s, obs, task) in enumerate(draws):
            other = draws[(k + 1) % len(draws)][2] if len(draws) > 1 else None
            gold_text = renderer.gold(task)
            if gold_text is not None:
                reward, failed, correct = _episode(env, s, task, gold_text)
                gold.rewards.append(reward)
                gold.passes += correct is True
                gold.masked += failed
            marker = workdir / f"ran-{k}"
            for name, completion in _probes_for(renderer, task, other, obs, str(marker)).items():
                p = results.setdefault(name, ProbeResult(name, DESCRIPTIONS[name], judged=name != "lookalike_gold"))
                if completion is None:
                    continue
                pair = completion if isinstance(completion, tuple) else (completion,)
                outcomes = [_episode(env, s, task, c) for c in pair]
                p.rewards.append(min(o[0] for o in outcomes))
                p.passes += all(o[2] is True for o in outcomes)
                p.masked += any(o[1] for o in outcomes)
                p.ran_code |= name == "injection" and marker.exists()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    notes = list(dict.fromkeys(renderer.errors))
    inconclusive = ""
    if gold.n:
        reference = gold.mean_reward
        if gold.passes < gold.n:
            notes.append(f"the gold completion is judged correct on only {gold.passes}/{gold.n} tasks")
        if reference <= 0:
            inconclusive = ("the gold completion earns no reward, so nothing can be judged against it: check the "
                            "env's render_answer hook or task.info['target'], and its verifier")
            reference = 1.0
    else:
        reference = 1.0
        notes.append("the env exposes no gold answers: rewards are judged against a nominal 1.0")
    probes = list(results.values())
    for p in probes:
        p.flag = _judge(p, reference, tolerance)
    return AuditReport(env_id, len(draws), tolerance, gold, reference, probes, notes, inconclusive)


def audit_ids(env_ids: Any, env_kwargs: Optional[dict] = None, **options) -> Any:
    """Audit each registered id in turn: yields ``(env_id, report)``, or ``(env_id, reason)`` for an
    env that cannot be built or audited as it stands (a missing argument, a refusal, no tasks)."""
    from .registry import make

    for env_id in env_ids:
        try:
            env = make(env_id, **(env_kwargs or {}))
            yield env_id, audit(env, env_id=env_id, **options)
        except Exception as e:  # noqa: BLE001 - one env that cannot be audited must not stop the sweep
            yield env_id, f"{type(e).__name__}: {e}"


def markdown_row(env_id: str, outcome: Any) -> str:
    """One ``| env | status | why |`` row of the docs' table for an :func:`audit_ids` outcome."""
    if isinstance(outcome, str):
        return f"| `{env_id}` | not audited | {outcome.splitlines()[0][:300]} |"
    why = "; ".join(f"`{p.name}`: {p.flag}" for p in outcome.flagged) or outcome.inconclusive or ""
    return f"| `{env_id}` | {outcome.status} | {why} |"


class AuditRefusal(RuntimeError):
    """``rlenv train`` refused to train on an env the audit flagged (``env.audit: refuse``)."""


def audit_before_training(make_env: Callable[[], Any], mode: str = "warn", env_id: str = "",
                          num_tasks: int = TRAIN_AUDIT_TASKS) -> Optional[AuditReport]:
    """The cheap audit ``rlenv train`` runs before the first step, on a fresh env from ``make_env``:
    ``warn`` (default) warns about a flagged env, ``refuse`` raises :class:`AuditRefusal`, ``off``
    skips it. Returns the report (``None`` when off)."""
    if mode not in MODES:
        raise ValueError(f"env.audit must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    report = audit(make_env(), num_tasks=num_tasks, env_id=env_id or None)
    if report.status == "ok":
        return report
    message = (f"rlenv audit: {report.summary()}. Run `rlenv audit {report.env_id}` for the full table; set "
               f"env.audit: off to skip this check" + ("" if mode == "refuse" else ", or refuse to stop here"))
    if mode == "refuse":
        raise AuditRefusal(message)
    warnings.warn(message, AuditWarning, stacklevel=2)
    return report


class AuditWarning(UserWarning):
    """The pre-training audit flagged the env (``env.audit: warn``)."""

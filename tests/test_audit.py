"""``rlenv audit``: planted exploitable verifiers are flagged, sound ones are not, on real envs."""

from __future__ import annotations

import json
import random
import warnings

import pytest

import rlenv
from rlenv.audit import AuditRefusal, AuditWarning, audit, audit_before_training, audit_ids
from rlenv.cli import main
from rlenv.env import SingleTurnEnv
from rlenv.parsers import parse_tag
from rlenv.sources import GeneratorSource
from verifiers.rubric import Component, Rubric


def one_digit_sums(rng: random.Random) -> rlenv.Task:
    a, b = rng.randint(0, 4), rng.randint(0, 5)
    return rlenv.Task(f"What is {a} plus {b}? Answer as <a>N</a>.", str(a + b), {"target": f"<a>{a + b}</a>"})


def substring_match(completion: str, task: rlenv.Task) -> float:
    """The planted bug: the one-digit answer anywhere in the completion counts."""
    return float(task.answer in completion)


def tagged_exact(completion: str, task: rlenv.Task) -> float:
    return float(parse_tag(completion, "a") == task.answer)


def raises_on_junk(completion: str, task: rlenv.Task) -> float:
    if parse_tag(completion, "a") is None:
        raise ValueError("no tag")
    return tagged_exact(completion, task)


def evals_the_answer(completion: str, task: rlenv.Task) -> float:
    """The planted security bug: the answer is eval'd in the trainer's process."""
    try:
        return float(str(eval(parse_tag(completion, "a") or "None")) == task.answer)  # noqa: S307
    except Exception:  # noqa: BLE001
        return 0.0


def with_format_credit(completion: str, task: rlenv.Task) -> float:
    return 0.2 * (parse_tag(completion, "a") is not None)


class HookedEnv(SingleTurnEnv):
    """Gold answers only in task.answer; the env says how an answer is written."""

    def render_answer(self, task, answer):
        return f"Final: <a>{answer}</a>"


def make_planted(verifier=substring_match, hooked: bool = False, extra=()) -> SingleTurnEnv:
    def gen(rng):
        task = one_digit_sums(rng)
        if hooked:
            task.info = {}
        return task

    cls = HookedEnv if hooked else SingleTurnEnv
    rubric = Rubric([Component(verifier, 1.0, name="correct"), *extra])
    return cls(GeneratorSource(gen, size=1000, seed=0), rubric)


@pytest.fixture
def planted():
    ids = []

    def register(env_id, **kwargs):
        rlenv.register(env_id, make_planted, **kwargs)
        ids.append(env_id)
        return env_id

    yield register
    for env_id in ids:
        rlenv.registry.unregister(env_id)


def test_a_substring_verifier_is_flagged_and_an_exact_one_is_not(planted, capsys):
    bad = planted("audit-test/substring-v0")
    good = planted("audit-test/exact-v0", verifier=tagged_exact)
    assert main(["audit", bad, "--num-tasks", "4", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "exploitable" and report["gold"]["mean_reward"] == 1.0
    flagged = {p["name"] for p in report["probes"] if p["flag"]}
    # spam holds every digit; a hedge holds the gold one whichever order it comes in
    assert {"spam_inline", "spam_spans", "hedge"} <= flagged
    assert not {"empty", "junk", "wrong_answer"} & flagged
    assert main(["audit", good, "--num-tasks", "4"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"{good}: ok") and "gold" in out and "FLAGGED" not in out


def test_hook_rendering_format_credit_masking_and_injection():
    # the env's render_answer hook writes gold and wrong answers (no info['target'] needed)
    report = audit(make_planted(tagged_exact, hooked=True), num_tasks=3)
    assert report.status == "ok" and report.gold.mean_reward == 1.0
    assert next(p for p in report.probes if p.name == "wrong_answer").n == 3
    # a small reward for the right format around a wrong answer is format credit, not an exploit
    credit = Component(with_format_credit, 1.0, name="format")
    report = audit(make_planted(tagged_exact, extra=[credit]), num_tasks=3)
    wrong = next(p for p in report.probes if p.name == "wrong_answer")
    assert wrong.mean_reward == pytest.approx(0.2) and report.status == "ok"
    # ... but not above the tolerance
    assert audit(make_planted(tagged_exact, extra=[credit]), num_tasks=3, tolerance=0.1).status == "exploitable"
    # a verifier that raises on junk masks it: training never penalises junk
    report = audit(make_planted(raises_on_junk), num_tasks=2)
    assert "masked" in next(p for p in report.probes if p.name == "junk").flag
    # a verifier that evals the answer runs the completion in our process
    report = audit(make_planted(evals_the_answer), num_tasks=2)
    assert "outside a sandbox" in next(p for p in report.probes if p.name == "injection").flag


def test_an_env_whose_gold_earns_nothing_is_inconclusive_and_flagged():
    report = audit(make_planted(lambda c, t: 0.0), num_tasks=2)
    assert report.status == "inconclusive" and "gold completion earns no reward" in report.inconclusive


def test_noisy_sft_labels_do_not_fool_the_audit():
    # arithmetic-v0 with label_noise: most info['target']s are off by one (SFT labels), so the gold
    # completion and another task's gold come from the env's render_answer hook, not the targets
    env = rlenv.make("arithmetic-v0", digits=1, operators="+", system_prompt="", label_noise=0.8)
    assert sum(env.source[i].info["target"] != f"<a>{env.source[i].answer}</a>" for i in range(20)) > 8
    report = audit(env, num_tasks=8)
    assert report.status == "ok" and report.gold.mean_reward == 1.0, report


def naive_code_verifier(completion: str, task: rlenv.Task) -> float:
    """The planted bug: pass = the solution and its asserts exit 0 (checked in the real sandbox)."""
    from verifiers.code import OK, extract_code, run_python

    code = extract_code(completion)
    if code is None:
        return 0.0
    result = run_python(code + "\n\n" + "\n".join(task.answer), timeout=10)
    return float(result.status == OK and result.exit_code == 0)


def test_fake_pass_probes_fool_an_exit_code_verifier():
    tasks = [rlenv.Task(f"Write add{k}(a, b).", [f"assert add{k}(2, 3) == 5", f"assert add{k}(0, 0) == 0"],
                        {"target": f"```python\ndef add{k}(a, b):\n    return a + b\n```"}, id=f"add{k}")
             for k in range(2)]
    report = audit(SingleTurnEnv(tasks, [naive_code_verifier]), num_tasks=2)
    flagged = {p.name for p in report.flagged}
    assert {"exit_before_tests", "os_exit", "swallow_failures", "always_equal"} <= flagged, report.table()
    assert not {"wrong_answer", "empty", "printed_pass"} & flagged


def test_train_gate_warns_refuses_or_stays_off():
    make = lambda: make_planted(substring_match)  # noqa: E731
    with pytest.warns(AuditWarning, match="exploitable.*spam_inline.*env.audit: off"):
        assert audit_before_training(make, "warn", "planted").status == "exploitable"
    with pytest.raises(AuditRefusal, match="exploitable"):
        audit_before_training(make, "refuse", "planted")
    assert audit_before_training(make, "off") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert audit_before_training(lambda: make_planted(tagged_exact), "refuse").status == "ok"


def test_rlenv_train_refuses_a_flagged_env_before_loading_a_model(planted, tmp_path, capsys):
    env_id = planted("audit-test/train-v0")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"model: preset:tiny\nenv: {{id: {env_id}}}\nstages:\n  - grpo: {{max_steps: 1}}\n"
                    f"output_dir: {tmp_path / 'out'}\n")
    assert main(["train", str(spec), "env.audit=refuse"]) == 1
    err = capsys.readouterr().err
    assert "rlenv train: error: rlenv audit: audit-test/train-v0: exploitable" in err
    assert "Traceback" not in err
    assert main(["check", str(spec), "env.audit=maybe"]) == 2  # the spec validates the mode
    with pytest.raises(SystemExit) as e:  # argparse names the choices
        main(["train", str(spec), "--audit", "maybe"])
    assert e.value.code == 2
    assert not list((tmp_path / "out").rglob("*.safetensors"))  # no stage ran


# -- every built-in and reasoning-gym env ---------------------------------------------------------

#: built-in envs flagged on this branch, and why (docs/audit.md carries the same table)
KNOWN_FLAGGED = {
    "math-v0": "prompt_echo: the verifier evaluates the question's own expression ('Compute A·B') as the answer",
    "instructions-v0": "junk/prompt_echo: constraints are checked, the topic is not; echoing the instruction "
                       "meets keyword and length constraints",
}
#: built-in envs the sweep cannot build without arguments
NEEDS_ARGUMENTS = {"preference-v0": "a reward model checkpoint (reward_model=PATH)"}


@pytest.mark.slow
def test_audit_every_builtin_and_reasoning_gym_env(tmp_path):
    rows = [{"question": f"What is {k} times 3?", "answer": str(3 * k)} for k in range(2, 6)]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    ids = [i for i in rlenv.envs() if rlenv.spec(i).source.startswith("tasks") and i not in NEEDS_ARGUMENTS]
    outcomes = {}
    for env_id in ids:
        kwargs = {"dataset-v0": {"path": str(data), "columns": {"prompt": "question"}},
                  "rg/composite-v0": {"config": {"datasets": [{"name": "leg_counting", "weight": 1, "config": {}},
                                                              {"name": "puzzle24", "weight": 1, "config": {}}]}},
                  }.get(env_id, {})
        outcomes.update(audit_ids([env_id], kwargs, num_tasks=2))
    not_built = {i: o for i, o in outcomes.items() if isinstance(o, str)}
    assert set(not_built) == {"rg/propositional_logic-v0"}, not_built  # it refuses, and says why
    assert "allow_unsound_scorer=True" in not_built["rg/propositional_logic-v0"]
    flagged = {i: o.summary() for i, o in outcomes.items() if not isinstance(o, str) and o.status != "ok"}
    assert not {i for i in flagged if i.startswith("rg/")}, flagged
    # fixing a verifier may unflag a built-in; a new flag must be looked at (and documented)
    assert set(flagged) <= set(KNOWN_FLAGGED), flagged
    doc = (__import__("pathlib").Path(__file__).parent.parent / "docs" / "audit.md").read_text()
    assert all(f"`{i}`" in doc for i in flagged)

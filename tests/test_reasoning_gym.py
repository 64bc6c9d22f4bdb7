"""reasoning-gym data sets as ``rg/<name>-v0`` envs, on the real installed package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rlenv

pytest.importorskip("reasoning_gym", reason="the optional reasoning-gym package is not installed")

from rlenv.audit_probes import wrong_variant  # noqa: E402
from tasks import reasoning_gym as rgenv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["leg_counting", "basic_arithmetic", "word_sorting"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_every_registered_dataset_has_an_id_and_nothing_else():
    from reasoning_gym.factory import DATASETS

    # the source scan that registration uses finds exactly the package's own registry
    assert rgenv.dataset_names() == sorted(DATASETS)
    ids = [i for i in rlenv.envs() if i.startswith("rg/")]
    assert ids == sorted(f"rg/{n}-v0" for n in DATASETS) and len(ids) > 100
    assert rlenv.spec("rg/leg_counting-v0").kwargs == {"name": "leg_counting"}


def test_importing_tasks_and_listing_envs_does_not_import_reasoning_gym():
    out = run_python("import sys, rlenv; ids = rlenv.envs(); "
                     "print(sum(i.startswith('rg/') for i in ids), 'reasoning_gym' in sys.modules)")
    assert out.returncode == 0, out.stderr
    n, imported = out.stdout.split()
    assert int(n) > 100 and imported == "False"


@pytest.mark.parametrize("name", TASKS)
def test_gold_answer_scores_one_and_wrong_answers_less(name):
    import reasoning_gym

    env = rlenv.make(f"rg/{name}-v0")
    obs, info = env.reset(seed=3)
    task = info["task"]
    # the prompt is reasoning-gym's own question under its default system prompt
    from reasoning_gym.utils import SYSTEM_PROMPTS

    assert obs[0] == {"role": "system", "content": SYSTEM_PROMPTS["default"]}
    same = reasoning_gym.create_dataset(name, seed=0, size=10_000)[task.info["rg_index"]]
    assert obs[1]["content"] == same["question"] and task.answer == same["answer"]

    _, reward, terminated, _, info = env.step(f"<think>done</think>\n<answer>{task.answer}</answer>")
    assert terminated and reward == 1.0 and info["scores"] == {"correct": 1.0, "format": 1.0}
    assert info["verdicts"]["correct"] == "correct"

    for wrong in (f"<answer>{task.answer} or maybe 7</answer>", "<answer>7</answer>", str(task.answer)):
        env.reset(seed=3)
        _, reward, _, _, info = env.step(wrong)
        assert reward < 1.0, wrong
    assert info["scores"]["format"] == 0.0  # the bare answer has no <answer> tags: reasoning-gym gives 0
    assert reward == 0.0


def test_partial_credit_is_reasoning_gyms_own_score_and_off_by_default():
    import reasoning_gym

    ds = reasoning_gym.create_dataset("word_sorting", seed=0, size=10_000)
    for partial_credit in (True, False):
        env = rlenv.make("rg/word_sorting-v0", partial_credit=partial_credit)
        _, info = env.reset(seed=0)
        task = info["task"]
        partial = task.answer.rsplit(", ", 1)[0]  # the last word left out
        want = ds.score_answer(partial, ds[task.info["rg_index"]])
        assert 0 < want < 1
        _, reward, _, _, info = env.step(f"<answer>{partial}</answer>")
        assert info["details"]["correct"]["rg_score"] == want
        assert reward == (want if partial_credit else 0.0)
        assert info["correct"] is False


def test_difficulty_is_the_curriculum_level():
    from reasoning_gym.factory import create_curriculum

    easy, hard = (rlenv.make("rg/leg_counting-v0", difficulty=d) for d in (0, 4))
    cur = create_curriculum("leg_counting")
    cur.set_global_level(4)
    want = cur.generate_configuration({"seed": 0, "size": 10_000})
    assert hard.source.dataset.config == want
    assert easy.source.dataset.config.max_animals < hard.source.dataset.config.max_animals

    def animals(env):
        counts = [json.loads(env.source[i].info["rg_metadata"])["animals"] for i in range(40)]
        return max(len(c) for c in counts), max(max(c.values()) for c in counts)

    (kinds_easy, most_easy), (kinds_hard, most_hard) = animals(easy), animals(hard)
    assert kinds_easy == 1 and kinds_hard > 1 and most_hard > most_easy
    # one attribute at a time, and explicit config fields win over the curriculum
    env = rlenv.make("rg/basic_arithmetic-v0", levels={"num_terms": 0}, config={"max_digits": 1})
    cfg = env.source.dataset.config
    assert (cfg.min_terms, cfg.max_terms, cfg.max_digits) == (2, 2, 1)


def test_curriculum_drives_the_difficulty_knob():
    from rlenv.curriculum import Curriculum

    cur = Curriculum("rg/leg_counting-v0", knob="difficulty", levels=[0, 1, 2], raise_at=0.5, window=1)
    first = cur.make_env().source.dataset.config
    assert cur.observe(1.0)
    second = cur.make_env().source.dataset.config
    assert second.max_animals > first.max_animals


def test_bad_arguments_get_one_clear_error():
    with pytest.raises(ValueError, match=r"difficulty must be a curriculum level in 0\.\.35, got 99"):
        rlenv.make("rg/leg_counting-v0", difficulty=99)
    with pytest.raises(ValueError, match="unknown curriculum attribute 'legs'.*num_animals"):
        rlenv.make("rg/leg_counting-v0", levels={"legs": 1})
    with pytest.raises(ValueError, match="config has unknown fields \\['animals'\\]"):
        rlenv.make("rg/leg_counting-v0", config={"animals": 3})
    with pytest.raises(ValueError, match="reasoning-gym rejected the config"):
        rlenv.make("rg/leg_counting-v0", config={"min_animals": 0})
    with pytest.raises(ValueError, match="no data set 'leg_countin'.*`leg_counting`"):
        rgenv.make_env("leg_countin")


def test_as_trl_dataset_and_reward_function_round_trip():
    env = rlenv.make("rg/leg_counting-v0")
    ds = env.as_dataset(n=4)
    reward = env.as_reward_function()
    rows = list(ds)
    columns = {k: [r[k] for r in rows] for k in ds.column_names if k != "prompt"}
    comps = [[{"role": "assistant", "content": f"<answer>{r['answer']}</answer>"}] for r in rows]
    assert reward(prompts=[r["prompt"] for r in rows], completions=comps, **columns) == [1.0] * 4


def test_missing_package_gives_an_install_hint():
    code = ("import sys; sys.modules['reasoning_gym'] = None\n"
            "import rlenv\n"
            "ids = rlenv.envs()\n"
            "assert 'arithmetic-v0' in ids and not any(i.startswith('rg/') for i in ids), ids\n"
            "from tasks.reasoning_gym import make_env\n"
            "try:\n"
            "    make_env('leg_counting')\n"
            "except ImportError as e:\n"
            "    print('ERR', e)\n")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert "ERR Env `rg/leg_counting-v0` needs the optional package reasoning-gym" in out.stdout
    assert "pip install reasoning-gym" in out.stdout
    assert "Traceback" not in out.stderr


# -- the sweep: every data set, gold answers and a battery of junk and wrong answers ---------------

#: answers no task of any data set has as its gold answer (checked per task below)
JUNK = ["", " ", "junk", "0", "1", "-1", "True", "False", "yes", "no", "None", "[]", "{}", "[[0]]", "A", "x" * 3000,
        "0 1 2 3 4 5 6 7 8 9", "nan", "NaN", "inf", "-inf", "1e309", "((((", "0/0", "1/0", "1,2,3", "True False",
        "zoo", "I", "{'a': 1}"]
#: code the answer must never run in our process; PROBE_FILE is replaced by a temp path
INJECTIONS = ["__import__('pathlib').Path('PROBE_FILE').touch()",
              "exec(chr(111)) or __import__('pathlib').Path('PROBE_FILE').touch()",
              "[__import__('pathlib').Path('PROBE_FILE').touch()]"]
#: data sets without a gold answer in reasoning-gym (their scorers check a proposed solution)
NO_GOLD = {"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"}


#: reasoning-gym gold answers our checks reject, with the reason
BAD_GOLD = {"intermediate_integration": ("Integral(", "the gold answer is sympy's unevaluated Integral(...), a "
                                         "restatement of the question that the scorer would accept for every task")}


def _same(a, b) -> bool:
    """Equal as text (whitespace and case aside) or as numbers."""
    a, b = " ".join(str(a).split()).lower(), " ".join(str(b).split()).lower()
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def sweep_answers(env, task, others) -> dict:
    """label -> a wrong answer for ``task``, or a pair of hedges (the gold answer with a wrong one,
    in both orders: a scorer that reads one position rewards at most one order). Wrong answers are
    the env's own where it knows them (puzzles with several solutions), else the gold one changed."""
    gold = task.answer
    answers = {f"junk {j[:12]!r}": j for j in JUNK}
    answers["question"] = task.prompt
    if gold is not None:
        wrong = (env.wrong_answers(task) or [wrong_variant(str(gold))])[0]
        answers["spam"] = ", ".join([wrong, "7", str(gold), "13", "x"])
        answers["wrong"] = wrong
        for sep in (", ", " or ", "\n", " "):
            answers[f"hedge {sep!r}"] = (f"{gold}{sep}{wrong}", f"{wrong}{sep}{gold}")
    for k, other in enumerate(others):
        if other.answer is not None:
            answers[f"other task's gold {k}"] = other.answer
    valid = [gold] if gold is not None else []
    if task.info.get("rg_metadata"):
        valid += json.loads(task.info["rg_metadata"]).get("valid_answers", [])  # n_queens lists them all
    return {k: a for k, a in answers.items() if isinstance(a, tuple) or not any(_same(a, v) for v in valid)}


def sweep(name: str, seeds: int = 10, battery_tasks: int = 3, probe_file: str = "") -> dict:
    """Score gold answers on ``seeds`` tasks and the junk/wrong battery on the first
    ``battery_tasks`` of them through ``rg/<name>-v0``; returns what went wrong."""
    env = rlenv.make(f"rg/{name}-v0", **({"allow_unsound_scorer": True} if name in rgenv.UNSOUND else {}))
    tasks = [env.reset(seed=s)[1]["task"] for s in range(seeds)]
    out = {"gold": [], "rewarded": [], "masked": [], "no_gold": 0}

    def score(task, answer):
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step(env.render_answer(task, answer))
        if info["failed"]:
            out["masked"].append((str(answer)[:40], info["details"]))
        return reward

    for task in tasks:
        if task.answer is None:
            out["no_gold"] += 1
        elif score(task, task.answer) != 1.0:
            known = BAD_GOLD.get(name)
            if not (known and known[0] in task.answer):
                out["gold"].append((task.id, task.answer))
    for task in tasks[:battery_tasks]:
        answers = sweep_answers(env, task, tasks[battery_tasks:battery_tasks + 3])
        answers.update({f"injection {k}": p.replace("PROBE_FILE", probe_file) for k, p in enumerate(INJECTIONS)})
        for label, answer in answers.items():
            reward = min(score(task, a) for a in answer) if isinstance(answer, tuple) else score(task, answer)
            if reward > 0:
                out["rewarded"].append((label, str(answer)[:60], str(task.answer)[:40], reward))
    return out


def _rg_names():
    from reasoning_gym.factory import DATASETS

    return sorted(n for n in DATASETS if n != "composite")


@pytest.mark.slow
def test_sweep_every_dataset_gold_scores_one_and_junk_zero(tmp_path):
    """Every rg env: gold answers score 1 on 10 seeds (where reasoning-gym has one), and no junk,
    wrong, hedged or injected answer earns reward, is masked, or runs as code."""
    probe = tmp_path / "ran"
    problems = {}
    for name in _rg_names():
        result = sweep(name, probe_file=str(probe))
        if name in NO_GOLD:
            assert result["no_gold"] == 10, name
        else:
            assert result["no_gold"] == 0, name
        bad = {k: v for k, v in result.items() if v and k != "no_gold"}
        if bad:
            problems[name] = bad
        assert not probe.exists(), f"rg/{name}-v0 ran the model's answer as code"
    assert not problems, json.dumps(problems, indent=1, default=str)


# -- our checks in front of reasoning-gym's scorers ------------------------------------------------

def _step(env, task, answer):
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(env.render_answer(task, answer))
    return reward, info


@pytest.mark.parametrize("name, wrong, raw_reward", [
    ("game_of_life_halting", lambda t: "junk", 1.0),                      # bool("junk") == bool("False")
    ("coin_flip", lambda t: "0", 1.0),                                    # prefix credit over min(len)
    ("complex_arithmetic", lambda t: "nan", 1.0),                         # min(1, exp(-nan)) == 1
    ("puzzle24", lambda t: "4*6 + 1 - 1", 1.0),                           # never checks which numbers
    ("simple_integration",                                                # restates the question
     lambda t: f"Integral({json.loads(t.info['rg_metadata'])['integrand']}, "
               f"{json.loads(t.info['rg_metadata'])['variable']}) + C", 1.0),
])
def test_guards_reject_wrong_answers_reasoning_gym_rewards(name, wrong, raw_reward):
    env = rlenv.make(f"rg/{name}-v0")
    for seed in range(3):
        task = env.reset(seed=seed)[1]["task"]
        if name == "coin_flip" and float(task.answer) < 1e-3:
            continue  # "0" is right (within the scorer's 1e-4) when the probability is that small
        answer = wrong(task)
        entry = env.rubric.components[0].verifier.entry(task)
        assert env.source.dataset.score_answer(answer, entry) == raw_reward  # the bug is still there
        reward, info = _step(env, task, answer)
        assert reward == 0.0 and not info["failed"] and info["details"]["correct"]["rejected"]
        assert _step(env, task, task.answer)[0] == 1.0


@pytest.mark.parametrize("name, junk", [("prime_factorization", "junk"), ("boxnet", "0"), ("game_of_life", "{}")])
def test_a_scorer_raising_on_the_answer_scores_zero_not_masked(name, junk):
    env = rlenv.make(f"rg/{name}-v0")
    task = env.reset(seed=0)[1]["task"]
    with pytest.raises(Exception):
        env.source.dataset.score_answer(junk, env.rubric.components[0].verifier.entry(task))
    reward, info = _step(env, task, junk)
    assert (reward, info["failed"], info["correct"]) == (0.0, False, False)
    assert "the scorer raised" in info["details"]["correct"]["rejected"]


def test_a_scorer_failing_on_the_task_itself_is_masked():
    env = rlenv.make("rg/word_sorting-v0")
    task = env.reset(seed=0)[1]["task"]
    broken = rlenv.Task(task.prompt, task.answer, {**task.info, "rg_metadata": json.dumps({})}, task.id)
    reward, info = _step(env, broken, "whatever")  # KeyError 'sorted_words' on the gold answer too
    assert info["failed"] and info["correct"] is None


def test_the_answer_never_runs_as_code_in_our_process(tmp_path):
    probe = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(probe)!r}).touch()"
    for name in ("n_queens", "binary_matrix", "spiral_matrix", "string_insertion", "puzzle24", "countdown",
                 "simple_integration", "polynomial_multiplication"):
        env = rlenv.make(f"rg/{name}-v0")
        task = env.reset(seed=0)[1]["task"]
        for answer in (code, f"[{code}]", "[0] * 10**12", "9**9**9**9"):
            reward, info = _step(env, task, answer)
            assert reward == 0.0 and not info["failed"], (name, answer)
        assert not probe.exists(), name
        assert _step(env, task, task.answer)[0] == 1.0
    # a Python-list answer, which these scorers read with eval, still reads as before
    env = rlenv.make("rg/spiral_matrix-v0", partial_credit=True)
    task = env.reset(seed=0)[1]["task"]
    as_list = repr([int(x) for x in task.answer.split()])
    assert _step(env, task, as_list)[0] == 0.1


def test_refuses_a_scorer_no_check_repairs_unless_allowed():
    with pytest.raises(ValueError, match="propositional_logic.*restating a compound premise.*allow_unsound_scorer=True"):
        rlenv.make("rg/propositional_logic-v0")
    env = rlenv.make("rg/propositional_logic-v0", allow_unsound_scorer=True)
    task = env.reset(seed=0)[1]["task"]
    premise = max(json.loads(task.info["rg_metadata"])["premises"], key=len)
    assert _step(env, task, premise)[0] == 1.0  # the reason it refuses
    with pytest.raises(ValueError, match="refuses"):
        rlenv.make("rg/composite-v0", config={"datasets": [{"name": "propositional_logic", "weight": 1, "config": {}}]})


# -- configs with nested objects from YAML ---------------------------------------------------------

COMPOSITE_SPEC = """
model: preset:tiny
env:
  id: rg/composite-v0
  kwargs:
    config:
      datasets:
        - {name: leg_counting, weight: 2, config: {min_animals: 2, max_animals: 3}}
        - {name: puzzle24, weight: 1, config: {}}
stages:
  - grpo: {max_steps: 1}
"""


def test_composite_runs_from_a_yaml_spec(tmp_path, micro_model_dir, capsys):
    from rlenv.cli import main
    from rlenv.runspec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(COMPOSITE_SPEC)
    assert main(["check", str(path)]) == 0
    spec = load_spec(path)
    env = rlenv.make(spec.env.id, **spec.env.kwargs)
    assert env.source.dataset.datasets["leg_counting"].config.max_animals == 3
    seen = set()
    for seed in range(12):
        task = env.reset(seed=seed)[1]["task"]
        source = json.loads(task.info["rg_metadata"])["source_dataset"]
        seen.add(source)
        assert _step(env, task, task.answer)[0] == 1.0
        if source == "puzzle24":  # our guard holds inside a composite too
            assert _step(env, task, "4*6 + 1 - 1")[0] == 0.0
    assert seen == {"leg_counting", "puzzle24"}
    # the same nested config as a command-line --env-kwarg, through `rlenv eval` with a real model
    kwarg = "config={datasets: [{name: leg_counting, weight: 1, config: {}}]}"
    out = tmp_path / "samples.jsonl"
    assert main(["eval", "rg/composite-v0", "--model", micro_model_dir, "--env-kwarg", kwarg, "--num-tasks", "2",
                 "-n", "1", "--max-new-tokens", "4", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "pass@1" in capsys.readouterr().out


def test_nested_dataclasses_enums_tuples_and_dates_from_plain_data():
    env = rlenv.make("rg/arc_agi-v0", config={"board_format_opts": {"col_delimiter": ",", "alphabet": list("abcdefghij")}})
    assert env.source.dataset.config.board_format_opts.col_delimiter == ","
    env = rlenv.make("rg/word_sorting-v0", config={"transformation": "uppercase"})
    assert env.source[0].answer.isupper()
    env = rlenv.make("rg/time_intervals-v0", config={"min_date": "2020-01-01", "max_date": "2020-12-31",
                                                    "task_types": ["date"]})
    assert str(env.source.dataset.config.max_date) == "2020-12-31"
    env = rlenv.make("rg/complex_arithmetic-v0", config={"operations": ["+", "-"], "operations_weights": [0.5, 0.5]})
    assert env.source.dataset.config.operations == ("+", "-")
    with pytest.raises(ValueError, match=r"config\.datasets\[0\]: unknown fields \['wieght'\]"):
        rlenv.make("rg/composite-v0", config={"datasets": [{"name": "leg_counting", "wieght": 1, "config": {}}]})
    with pytest.raises(ValueError, match=r"config\.transformation: 'shout' is not one of"):
        rlenv.make("rg/word_sorting-v0", config={"transformation": "shout"})
    with pytest.raises(ValueError, match="rg/composite-v0 needs config="):
        rlenv.make("rg/composite-v0")

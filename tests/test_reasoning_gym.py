"""reasoning-gym data sets as ``rg/<name>-v0`` envs, on the real installed package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rlenv

pytest.importorskip("reasoning_gym", reason="the optional reasoning-gym package is not installed")

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


def test_score_matches_reasoning_gyms_own_scorer_on_partial_credit():
    import reasoning_gym

    env = rlenv.make("rg/word_sorting-v0")
    _, info = env.reset(seed=0)
    task = info["task"]
    ds = reasoning_gym.create_dataset("word_sorting", seed=0, size=10_000)
    entry = ds[task.info["rg_index"]]
    partial = task.answer + ", extra"
    _, reward, _, _, _ = env.step(f"<answer>{partial}</answer>")
    assert reward == ds.score_answer(partial, entry)


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

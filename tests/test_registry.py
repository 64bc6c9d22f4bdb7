"""register / make / spec / listing, versioned ids, error messages, and the built-in arithmetic env."""

import subprocess
import sys

import pytest

import rlenv
from rlenv import DuplicateEnvError, EnvNotFoundError, SingleTurnEnv, Task
from rlenv.registry import unregister
from verifiers.rubric import Rubric


def _exact(completion, task):
    return float(completion == task.answer)


def make_echo(n=3, system_prompt=None):
    return SingleTurnEnv([Task(f"say {i}", str(i)) for i in range(n)], Rubric([_exact]), system_prompt=system_prompt)


@pytest.fixture
def temp_ids():
    ids = []
    yield ids
    for i in ids:
        unregister(i)


def test_register_make_spec(temp_ids):
    temp_ids.append("test/echo-v0")
    s = rlenv.register("test/echo-v0", make_echo, description="echo numbers", n=5)
    assert (s.namespace, s.name, s.version) == ("test", "echo", 0)
    assert rlenv.spec("test/echo-v0") is s and s.source == __name__
    env = rlenv.make("test/echo-v0", system_prompt="hi")
    assert len(env.source) == 5 and env.system_prompt == "hi"
    assert env.spec.id == "test/echo-v0" and env.spec.kwargs == {"n": 5, "system_prompt": "hi"}
    assert s.kwargs == {"n": 5}  # overrides never leak into the registered spec
    assert "test/echo-v0" in rlenv.envs()


def test_string_entry_point(temp_ids):
    temp_ids.append("echo-str-v0")
    rlenv.register("echo-str-v0", f"{__name__}:make_echo")
    assert isinstance(rlenv.make("echo-str-v0"), SingleTurnEnv)
    temp_ids.append("echo-bad-v0")
    rlenv.register("echo-bad-v0", "no_such_module_xyz:make")
    with pytest.raises(ImportError, match="echo-bad-v0.*no_such_module_xyz"):
        rlenv.make("echo-bad-v0")


def test_duplicate_and_malformed_ids(temp_ids):
    temp_ids.append("dup-v0")
    rlenv.register("dup-v0", make_echo)
    with pytest.raises(DuplicateEnvError, match=r"`dup-v0` is already registered.*`dup-v1`"):
        rlenv.register("dup-v0", make_echo)
    for bad in ("noversion", "x-v", "x-vA", "", "a b-v0"):
        with pytest.raises(ValueError, match="malformed"):
            rlenv.register(bad, make_echo)
    with pytest.raises(ValueError, match="entry_point"):
        rlenv.register("ep-v0", "not_a_module_path")


def test_unknown_id_suggestions():
    with pytest.raises(EnvNotFoundError, match="Did you mean `arithmetic-v0`"):
        rlenv.make("arithmetc-v0")
    with pytest.raises(EnvNotFoundError, match="Available versions: `arithmetic-v0`"):
        rlenv.make("arithmetic-v7")
    with pytest.raises(EnvNotFoundError, match="carry a version"):
        rlenv.spec("zzzzzz")


def test_make_rejects_bad_kwargs_and_non_envs(temp_ids):
    with pytest.raises(TypeError, match="arithmetic-v0.*rejected the arguments"):
        rlenv.make("arithmetic-v0", digitz=3)
    temp_ids.append("notenv-v0")
    rlenv.register("notenv-v0", lambda: object())
    with pytest.raises(TypeError, match="no reset"):
        rlenv.make("notenv-v0")


def test_spec_stays_the_registry_lookup_after_importing_the_run_spec_module():
    import rlenv.runspec  # noqa: F401  (the run-spec loader lives under its own name)

    with pytest.warns(DeprecationWarning):
        from rlenv.spec import load_spec  # the old module path: a deprecated alias
    assert rlenv.spec is rlenv.registry.spec and rlenv.spec("arithmetic-v0").id == "arithmetic-v0"
    assert load_spec is rlenv.runspec.load_spec


def test_listing_and_pprint(capsys):
    text = rlenv.pprint_registry()
    assert "arithmetic-v0" in text and "arithmetic-v0" in capsys.readouterr().out


def test_import_is_lazy():
    code = ("import sys, rlenv; assert 'tasks' not in sys.modules and 'trainers' not in sys.modules; "
            "rlenv.envs(); assert 'tasks.arithmetic' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_arithmetic_env():
    env = rlenv.make("arithmetic-v0", digits=3, operators="*", difficulty=2)
    rlenv.check_env(env)
    obs, info = env.reset(seed=11)
    task = info["task"]
    assert obs[-1]["content"].startswith("What is ") and "*" in obs[-1]["content"]
    assert task.info["target"] == f"<a>{task.answer}</a>"
    a, b = task.info["a"], task.info["b"]
    assert int(task.answer) == a * b and max(a, b) <= 999
    _, reward, term, _, info = env.step(task.info["target"])
    assert reward == 1.0 and term and info["scores"] == {"correct": 1.0, "format": 1.0}
    env.reset(seed=11)
    _, reward, _, _, info = env.step(f"Let me think. <a>{task.answer}</a> done")
    assert reward == 1.0 and info["scores"]["format"] == 0.0  # format is logged, weight 0
    env.reset(seed=11)
    assert env.step(f"<a>{int(task.answer) + 1}</a>")[1] == 0.0
    env.reset(seed=11)
    assert env.step(f"<a>{task.answer}.0</a>")[1] == 0.0  # exact integer match only
    env.reset(seed=11)
    assert env.step("no idea")[1] == 0.0


def test_arithmetic_difficulty_and_validation():
    easy = rlenv.make("arithmetic-v0", operators="-", difficulty=0, size=200)
    for i in range(200):
        t = easy.source[i]
        assert int(t.answer) >= 0 and max(t.info["a"], t.info["b"]) <= 49
    hard = rlenv.make("arithmetic-v0", operators="-", difficulty=2, size=200)
    assert any(int(hard.source[i].answer) < 0 for i in range(200))
    shots = rlenv.make("arithmetic-v0", few_shot=2).reset(seed=0)[0]
    assert [m["role"] for m in shots] == ["system", "user", "assistant", "user", "assistant", "user"]
    for bad, match in (({"digits": 0}, "digits"), ({"operators": "/"}, "operators"), ({"difficulty": 5}, "difficulty")):
        with pytest.raises(ValueError, match=match):
            rlenv.make("arithmetic-v0", **bad)
    # the same seed gives the same task stream across env instances
    e1, e2 = rlenv.make("arithmetic-v0"), rlenv.make("arithmetic-v0")
    assert [e1.reset(seed=s)[0] for s in range(5)] == [e2.reset(seed=s)[0] for s in range(5)]


def test_arithmetic_partial_credit_is_a_weighted_component_and_keeps_the_verdict():
    from tasks.arithmetic import digit_credit

    env = rlenv.make("arithmetic-v0", digits=2, operators="+", partial_credit=0.5, system_prompt="")
    _, info = env.reset(seed=3)
    task = info["task"]
    gold = task.answer
    wrong_units = gold[:-1] + str((int(gold[-1]) + 1) % 10)
    assert digit_credit(f"<a>{gold}</a>", task) == 1.0
    assert digit_credit(f"<a>{wrong_units}</a>", task) == pytest.approx((len(gold) - 1) / len(gold))
    assert digit_credit("no tag", task) == 0.0 and digit_credit("<a>x</a>", task) == 0.0
    assert digit_credit("<a>-5</a>", rlenv.Task("What is 2 - 7?", answer="-5")) == 1.0
    assert digit_credit("<a>5</a>", rlenv.Task("What is 2 - 7?", answer="-5")) == 0.5  # the sign is a place
    _, reward, _, _, info = env.step(f"<a>{gold}</a>")
    assert reward == pytest.approx(1.5) and info["correct"] is True
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(f"<a>{wrong_units}</a>")
    assert 0 < reward < 0.5 and info["correct"] is False  # partial credit never counts as a pass
    with pytest.raises(ValueError, match="partial_credit"):
        rlenv.make("arithmetic-v0", partial_credit=-1)


def test_arithmetic_label_noise_changes_sft_targets_only():
    clean = rlenv.make("arithmetic-v0", digits=1, operators="+", size=2000)
    noisy = rlenv.make("arithmetic-v0", digits=1, operators="+", size=2000, label_noise=0.8, few_shot=2)
    off = 0
    for i in range(2000):
        c, n = clean.source[i], noisy.source[i]
        assert (c.prompt, c.answer) == (n.prompt, n.answer)  # the same task stream
        assert c.info["target"] == f"<a>{c.answer}</a>"
        assert n.info["target"] in (c.info["target"], f"<a>{int(c.answer) + 1}</a>")
        off += n.info["target"] != c.info["target"]
    assert 0.75 < off / 2000 < 0.85
    _, info = noisy.reset(seed=0)
    assert noisy.step(info["task"].info["target"])[4]["correct"] == (info["task"].info["target"] == f"<a>{info['task'].answer}</a>")
    shots = [m for m in noisy.reset(seed=0)[0] if m["role"] != "system"][:-1]  # the solved examples
    assert len(shots) == 4
    for question, answer in zip(shots[0::2], shots[1::2]):  # always right: they are prompt, not labels
        a, b = map(int, question["content"].removeprefix("What is ").rstrip("?").split(" + "))
        assert answer["content"] == f"<a>{a + b}</a>"
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="label_noise"):
            rlenv.make("arithmetic-v0", label_noise=bad)

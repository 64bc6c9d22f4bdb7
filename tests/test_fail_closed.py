"""The sandbox fails closed: without a working isolation tier nothing untrusted runs, unless the weak
tier is asked for twice (a parameter and an environment variable) — and then the run's log says so,
and the weak tier still fences the program's writes into its scratch dir."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rlenv
from rlenv import Task
from rlenv.cli import main
from verifiers.code import CodeVerifier, Limits, SandboxUnavailable, run_python, run_tests
from verifiers.code import _landlock, _launch

ROOT = Path(__file__).resolve().parents[1]
WEAK = _launch.WEAK_ENV
ADD_TASK = Task("Write add.", answer=["assert add(1, 2) == 3"], id="add")
ADD = "```python\ndef add(a, b):\n    return a + b\n```"


@pytest.fixture
def no_bwrap(monkeypatch):
    """This process's bubblewrap probe fails (as on a machine where it is missing or broken)."""
    def probe_fails():
        _launch._why_not = "the bubblewrap probe failed (made to fail by this test)"
        return False

    monkeypatch.setattr(_launch, "_bwrap_works", probe_fails)
    monkeypatch.delenv(WEAK, raising=False)
    _launch.forget_probe()
    yield
    _launch.forget_probe()


def writer(*paths) -> str:
    return "".join(f"open({str(p)!r}, 'w').write('x')\n" for p in paths) + "print('RAN')"


def test_run_python_refuses_with_one_error_naming_the_fix_and_writes_nothing(no_bwrap, monkeypatch, tmp_path):
    canary = tmp_path / "canary"
    for allow, env in [(False, None), (True, None), (False, "1"), (True, "0")]:  # one opt-in is not enough
        if env is None:
            monkeypatch.delenv(WEAK, raising=False)
        else:
            monkeypatch.setenv(WEAK, env)
        with pytest.raises(SandboxUnavailable) as e:
            run_python(writer(canary), allow_weak_sandbox=allow)
        msg = str(e.value)
        assert "\n" not in msg and "bubblewrap" in msg and ".ci/install-sandbox.sh" in msg, msg
        assert "allow_weak_sandbox=True" in msg and f"{WEAK}=1" in msg and "probe failed" in msg
        assert not canary.exists()
    # everything else that runs untrusted code refuses the same way, before anything runs
    with pytest.raises(SandboxUnavailable):
        run_tests(writer(canary), ["assert add(1, 2) == 3"])
    with pytest.raises(SandboxUnavailable):
        CodeVerifier().preflight()
    env = rlenv.make("code-v0")
    with pytest.raises(SandboxUnavailable):
        env.preflight()
    # inside a step the refusal is an infrastructure failure (masked), never a score
    _, info = env.reset(options={"task_index": 0})
    _, reward, *_, step_info = env.step(f"```python\n{writer(canary)}\n```")
    assert step_info["failed"] and reward == 0.0 and not canary.exists()
    rlenv.make("arithmetic-v0").preflight()  # an env that runs no code is unaffected


def test_a_machine_without_bubblewrap_on_path_refuses(tmp_path):
    canary = tmp_path / "canary"
    code = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom verifiers.code import run_python, SandboxUnavailable\n"
            f"try:\n    run_python({writer(canary)!r})\nexcept SandboxUnavailable as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert out.stdout.startswith("REFUSED") and "not installed or not on PATH" in out.stdout, out
    assert not canary.exists() and "RAN" not in out.stdout


def test_eval_and_train_stop_before_the_first_step(no_bwrap, capsys, tmp_path):
    assert main(["eval", "code-v0", "--model", "preset:tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlenv eval: error: ") and "bubblewrap" in err[0], err
    spec = yaml.safe_load((ROOT / "examples" / "arithmetic_sft_grpo.yaml").read_text())
    spec.update(env={"id": "code-v0"}, output_dir=str(tmp_path / "out"))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(tmp_path / "spec.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlenv train: error: ") and "bubblewrap" in err[0], err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no stage ran
    from rlenv.evaluation import evaluate

    with pytest.raises(SandboxUnavailable):
        evaluate("code-v0", model=object())  # refused before any engine is built


def test_weak_tier_runs_only_when_asked_twice_and_the_log_says_so(no_bwrap, monkeypatch, caplog):
    monkeypatch.setenv(WEAK, "1")
    with caplog.at_level(logging.WARNING, logger="verifiers.code"):
        r = run_python("print(6 * 7)", allow_weak_sandbox=True)
        r2 = run_python("print(1)", allow_weak_sandbox=True)
    assert (r.status, r.stdout, r.tier, r2.tier) == ("ok", "42\n", "rlimits", "rlimits"), r
    warned = [rec.getMessage() for rec in caplog.records if "WEAK rlimits tier" in rec.getMessage()]
    assert len(warned) == 1 and "probe failed" in warned[0] and ".ci/install-sandbox.sh" in warned[0]
    # the limits still hold
    m = run_python("x = bytearray(50 * 1024 ** 3)", limits=Limits(memory_mb=256, allow_weak_sandbox=True))
    assert m.status == "memory", m
    # the verifier flags every result it scored there; a code env takes the opt-in as a kwarg
    res = CodeVerifier(allow_weak_sandbox=True).score(ADD, ADD_TASK)
    assert (res.reward, res.details["tier"], res.details["weak_sandbox"]) == (1.0, "rlimits", True), res
    env = rlenv.make("code-v0", allow_weak_sandbox=True)
    env.preflight()
    _, info = env.reset(options={"task_index": 0})
    assert env.step(info["task"].info["target"])[1] == 1.0


@pytest.mark.skipif(_landlock.abi() == 0, reason="this kernel has no Landlock, so the weak tier cannot fence "
                    "writes (docs/sandbox.md says so)")
def test_weak_tier_confines_writes_to_its_scratch_dir(no_bwrap, monkeypatch, tmp_path):
    monkeypatch.setenv(WEAK, "1")
    tag = secrets.token_hex(6)
    secret = tmp_path / "secret.txt"
    secret.write_text(f"SECRET-{tag}")
    secret.chmod(0o644)
    targets = [str(tmp_path / "canary"), f"/tmp/rlenv-escape-{tag}", f"/var/tmp/rlenv-escape-{tag}",
               f"../rlenv-escape-{tag}", os.path.join(os.getcwd(), f"PWNED-{tag}"), f"/PWNED-{tag}"]
    src = f"""
import os
for p in {targets!r}:
    try:
        open(p, "w").write("x")
        print("WROTE", p)
    except OSError as e:
        print("denied", p, e.errno)
open("scratch.txt", "w").write("fine")
print("SCRATCH", open(os.path.join(os.getcwd(), "scratch.txt")).read())
try:
    print(open({str(secret)!r}).read())
except OSError as e:
    print("read denied", e.errno)
"""
    r = run_python(src, allow_weak_sandbox=True)
    assert r.status == "ok" and "SCRATCH fine" in r.stdout and "WROTE" not in r.stdout, r
    assert f"SECRET-{tag}" not in r.stdout and "read denied" in r.stdout
    for p in targets:
        assert not os.path.exists(p if os.path.isabs(p) else os.path.join("/tmp", os.path.basename(p))), p


def test_weak_tier_as_an_unprivileged_user():
    # the same library driven by a normal user: no dedicated uid, an unprivileged user namespace
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root to switch to an unprivileged user, and /usr/bin/python3")
    if any(not (p.stat().st_mode & 0o005) for p in [ROOT, *ROOT.parents, ROOT / "verifiers"] if str(p) != "/"):
        pytest.skip(f"{ROOT} is not readable by other users")
    tag = secrets.token_hex(6)
    code = (f"import sys, json\nsys.path.insert(0, {str(ROOT)!r})\nfrom verifiers.code import run_python\n"
            f"r = run_python(\"open('/tmp/rlenv-np-{tag}', 'w')\", allow_weak_sandbox=True)\n"
            "ok = run_python('print(6 * 7)', allow_weak_sandbox=True)\n"
            "print(json.dumps([ok.tier, ok.stdout, r.status]))")
    env = {"PATH": "/usr/bin:/bin", "RLENV_SANDBOX_TIER": "rlimits", WEAK: "1"}
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", code],
                         capture_output=True, text=True, timeout=60, cwd="/tmp", env=env)
    tier, stdout, write_status = json.loads(out.stdout.strip().splitlines()[-1])
    assert (tier, stdout) == ("rlimits", "42\n"), out.stderr
    if _landlock.abi():
        assert write_status == "error" and not os.path.exists(f"/tmp/rlenv-np-{tag}")
    assert "WEAK rlimits tier" in out.stderr  # logged even with logging unconfigured

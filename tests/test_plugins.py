"""Entry-point plugins: a throwaway package with `rlenv.envs` and `rlenv.verifiers` entry points is
pip-installed into this environment; a fresh interpreter finds its env without importing it."""

import json
import subprocess
import sys
import textwrap

PKG = "rlenv_plugin_demo"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{PKG.replace('_', '-')}"
version = "0.0.1"

[tool.setuptools]
packages = ["{PKG}"]

[project.entry-points."rlenv.envs"]
demo = "{PKG}.envs"
demo_callable = "{PKG}.hooks:register_more"
zz_broken = "{PKG}.broken"

[project.entry-points."rlenv.verifiers"]
demo = "{PKG}.verifiers:register_verifiers"
"""

FILES = {
    "__init__.py": "",
    "envs.py": """
        import rlenv
        from rlenv import SingleTurnEnv, Task
        from .verifiers import shout

        def make_env(n=3):
            return SingleTurnEnv([Task(f"shout {i}", str(i)) for i in range(n)], [shout])

        rlenv.register("plugdemo/shout-v0", make_env, description="plugin env")
    """,
    "hooks.py": """
        import rlenv

        def register_more():
            from .envs import make_env
            rlenv.register("plugdemo/shout-v1", make_env, n=7)
    """,
    "broken.py": "raise RuntimeError('this plugin is broken on purpose')\n",
    "verifiers.py": """
        LOADED = []

        def shout(completion, task):
            return float(completion == task.answer.upper() + "!" or completion == task.answer + "!")

        def register_verifiers():
            import verifiers

            verifiers.register("plugdemo_shout", shout)
            LOADED.append("shout")
    """,
}

CHECK = textwrap.dedent(f"""
    import json, sys, warnings
    import rlenv
    from rlenv.plugins import plugin_errors
    before = "{PKG}" in sys.modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = rlenv.make("plugdemo/shout-v0")
        v1 = rlenv.make("plugdemo/shout-v1")
    env.reset(seed=0)
    _, reward, *_ = env.step(env.task.answer + "!")
    import verifiers
    registered = "plugdemo_shout" in verifiers.list_verifiers()  # first read loads the plugins
    from {PKG}.verifiers import LOADED
    print(json.dumps({{"imported_before": before, "reward": reward, "v1_size": len(v1.source),
                       "source": rlenv.spec("plugdemo/shout-v0").source, "verifiers_loaded": LOADED,
                       "verifier_registered": registered,
                       "errors": [str(e) for e in plugin_errors()],
                       "warnings": [str(w.message) for w in caught],
                       "builtin": "arithmetic-v0" in rlenv.envs()}}))
""")


def test_plugin_package_is_discovered(tmp_path):
    root = tmp_path / "plugin"
    pkg = root / PKG
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    for name, body in FILES.items():
        (pkg / name).write_text(textwrap.dedent(body))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", "--no-index", str(root)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    try:
        out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(pip + ["uninstall", "-y", PKG.replace("_", "-")], capture_output=True, timeout=300)
    assert res["imported_before"] is False  # discovered, not imported by the user
    assert res["reward"] == 1.0 and res["v1_size"] == 7
    assert res["source"] == f"{PKG}.envs"
    assert res["verifiers_loaded"] == ["shout"] and res["verifier_registered"] is True
    assert res["builtin"] is True  # the broken plugin did not stop the built-ins or the others
    assert len(res["errors"]) == 1 and "'zz_broken'" in res["errors"][0] and "broken on purpose" in res["errors"][0]
    assert any("zz_broken" in w for w in res["warnings"])


def test_load_plugins_without_plugins_is_harmless():
    from rlenv.plugins import load_plugins

    assert load_plugins("rlenv.no-such-group-for-tests") == []
    assert load_plugins("rlenv.no-such-group-for-tests") == []  # second call: already loaded

"""The verifier registry: decorator, lookup, listing, lazy built-ins and entry-point plugins."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import verifiers
from rlenv.core import Task
from verifiers.registry import VerifierNotFoundError

ROOT = Path(__file__).resolve().parents[1]


def plugin_snippet() -> str:
    """The plugin example from docs/verifiers.md, exactly as users read it."""
    doc = (ROOT / "docs" / "verifiers.md").read_text()
    block = doc.split("<!-- plugin-snippet:start -->", 1)[1].split("<!-- plugin-snippet:end -->", 1)[0]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def make_distribution(site: Path, dist: str, entry_points: dict, modules: dict) -> None:
    """A real installed distribution (dist-info with METADATA and entry_points.txt) on a path entry,
    which is all importlib.metadata needs to discover its entry points."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[rlenv.verifiers]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, body in modules.items():
        (site / name).write_text(body)


def run_python(code: str, site: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ten_line_plugin_from_the_docs_works_through_an_env(tmp_path):
    snippet = plugin_snippet()
    assert len(snippet.strip().splitlines()) <= 10
    site = tmp_path / "site"
    make_distribution(site, "polite_plugin", {"polite": "my_verifiers",
                                              "broken": "broken_verifiers",
                                              "hook": "hook_verifiers:setup"},
                      {"my_verifiers.py": snippet,
                       "broken_verifiers.py": "raise ImportError('missing dependency on purpose')\n",
                       "hook_verifiers.py": "import verifiers\n"
                                            "def setup():\n"
                                            "    verifiers.register('shout', lambda c, t: float(c.isupper()))\n"})
    res = run_python("""
        import json, sys, warnings
        import rlenv, verifiers
        from rlenv import Task
        from rlenv.plugins import plugin_errors
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            imported_early = "my_verifiers" in sys.modules
            env = rlenv.SingleTurnEnv([Task("Ask for salt.")], ["polite", "shout"])
            env.reset(seed=0)
            _, r1, *_, info = env.step("Pass the salt, please.")
            env.reset(seed=0)
            _, r2, *_ = env.step("SALT")
            names = verifiers.list_verifiers()  # a second read does not reload or re-report
        print(json.dumps({"early": imported_early, "r1": r1, "r2": r2, "scores": info["scores"],
                          "names": names, "errors": [str(e) for e in plugin_errors("rlenv.verifiers")],
                          "warnings": [str(w.message) for w in caught if "broken" in str(w.message)]}))
    """, site)
    assert res["early"] is False
    assert res["r1"] == 1.0 and res["scores"] == {"polite": 1.0, "shout": 0.0}
    assert res["r2"] == 1.0
    assert {"polite", "shout", "exact_match", "math", "code"} <= set(res["names"])
    assert len(res["errors"]) == 1 and "'broken'" in res["errors"][0] and "missing dependency" in res["errors"][0]
    assert len(res["warnings"]) == 1


def test_register_function_and_class_then_get():
    @verifiers.register("test_reg_starts_with")
    def starts_with(completion, task, prefix="A"):
        """1 when the completion starts with the prefix."""
        return float(completion.startswith(prefix))

    @verifiers.register("test_reg_len_at_most")
    class LenAtMost:
        def __init__(self, n=3):
            self.n = n

        def score(self, completion, task):
            return float(len(completion) <= self.n)

    try:
        assert verifiers.get("test_reg_starts_with") is starts_with
        bound = verifiers.get("test_reg_starts_with", prefix="B")
        assert bound("Bee", None) == 1.0 and bound.__name__ == "starts_with"
        v = verifiers.get("test_reg_len_at_most", n=2)
        assert isinstance(v, LenAtMost) and v.n == 2
        assert "test_reg_starts_with" in verifiers.list_verifiers()
        assert verifiers.spec("test_reg_starts_with").description == "1 when the completion starts with the prefix."
        assert verifiers.spec("test_reg_starts_with").source == __name__
        r = verifiers.Rubric([verifiers.Component("test_reg_len_at_most")]).score("abcd", Task("q"))
        assert r.reward == 0.0 and r.components == {"test_reg_len_at_most": 0.0}
    finally:
        verifiers.unregister("test_reg_starts_with")
        verifiers.unregister("test_reg_len_at_most")


def test_bare_decorator_and_lazy_string_target():
    @verifiers.register
    def test_reg_bare(completion, task):
        return 1.0

    verifiers.register("test_reg_lazy", "verifiers.format:ExactMatch")
    try:
        assert verifiers.get("test_reg_bare") is test_reg_bare
        em = verifiers.get("test_reg_lazy", parser="boxed")
        assert em.score(r"\boxed{7}", Task("q", "7")).reward == 1.0
    finally:
        verifiers.unregister("test_reg_bare")
        verifiers.unregister("test_reg_lazy")


def test_errors_say_what_to_do():
    with pytest.raises(VerifierNotFoundError, match="Did you mean 'exact_match'"):
        verifiers.get("exact_mach")
    verifiers.register("test_reg_dup", lambda c, t: 1.0)
    try:
        with pytest.raises(ValueError, match="already registered"):
            verifiers.register("test_reg_dup", lambda c, t: 0.0)
        verifiers.register("test_reg_dup", lambda c, t: 0.5, overwrite=True)
        assert verifiers.get("test_reg_dup")("x", None) == 0.5
    finally:
        verifiers.unregister("test_reg_dup")
    with pytest.raises(TypeError, match="rejected the arguments"):
        verifiers.get("exact_match", nonsense=1)
    with pytest.raises(TypeError, match="register a function"):
        verifiers.register("test_reg_bad", 42)


def test_import_is_light_and_a_broken_builtin_does_not_break_the_others(tmp_path):
    # the built-ins are entry points like any plugin: one more, whose module is missing, must not hide them
    make_distribution(tmp_path, "zz-broken-builtin", {"aa_broken": "verifiers.does_not_exist"}, {})
    res = run_python("""
        import json, sys
        import verifiers
        light = not any(m in sys.modules for m in ("torch", "transformers", "sympy", "trl"))
        names = verifiers.list_verifiers()
        print(json.dumps({"light": light, "names": names}))
    """, tmp_path)
    assert res["light"] is True
    assert {"exact_match", "reward_model", "math", "code"} <= set(res["names"])

"""Safe loading: nothing rlenv reads can run code it was not told to run.

- specs are read with ``yaml.safe_load`` only (a ``!!python/object`` spec is rejected, and no other
  YAML loader appears in the source tree);
- weights are written and read as safetensors: a checkpoint and an exported model hold no pickle
  weight files, and the few ``.pt`` files (optimizer, scheduler, RNG states) load with
  ``torch.load(weights_only=True)`` — the only way ``torch.load`` is called in the source tree;
- ``from_pretrained`` never passes ``trust_remote_code=True``;
- plugin code runs only from installed entry points or a ``module:attr`` the user wrote in
  ``register(...)``: env ids, verifier names and spec values that look like ``module:attr`` import
  nothing, and every dynamic import in the source tree is one of a reviewed list.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rlenv.runspec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rlenv", "verifiers", "trainers", "tasks")
PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pth", ".ckpt", ".joblib", ".npy", ".npz")


def _sources():
    for pkg in PACKAGES + ("benchmarks", "examples"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of an attribute chain / name, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _calls(name_suffixes: tuple):
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func).endswith(name_suffixes):
                yield path.relative_to(ROOT), node


# -- specs ----------------------------------------------------------------------------------------
def test_specs_are_read_with_safe_load_only(tmp_path):
    unsafe = [f"{p}:{n.lineno}" for p, n in _calls(("yaml.load", "yaml.unsafe_load", "yaml.full_load",
                                                    "yaml.load_all", "yaml.unsafe_load_all", "yaml.full_load_all"))]
    assert not unsafe, f"YAML loaders that can build Python objects: {unsafe}"
    marker = tmp_path / "ran"
    for tag in (f'!!python/object/apply:os.system ["touch {marker}"]',
                f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]', "!!python/name:os.system"):
        spec = tmp_path / "evil.yaml"
        spec.write_text(f"model: {tag}\nenv: arithmetic-v0\nstages: [{{sft: {{}}}}]\n")
        with pytest.raises(SpecError, match="invalid YAML.*python/"):
            load_spec(spec)
    assert not marker.exists()


# -- weights --------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_checkpoints_and_exports_hold_no_pickled_weights(micro_model_dir, tmp_path, use_lora):
    from trainers.checkpoint import latest_checkpoint, verify_checkpoint
    from trainers.config import SFTConfig
    from trainers.sft import SFTTrainer

    rows = [{"prompt": f"{a}+{a}=", "completion": str(2 * a)} for a in range(8)]
    cfg = SFTConfig(output_dir=str(tmp_path), max_steps=1, save_steps=1, per_device_train_batch_size=4,
                    learning_rate=1e-3, lora={"r": 4} if use_lora else None, progress_bar=False, report_to="none")
    SFTTrainer(micro_model_dir, cfg, train_dataset=rows).train()
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    files = list(verify_checkpoint(ckpt)["files"])
    weights = [f for f in files if f.startswith("model/") and f.endswith(".safetensors")]
    assert weights, files
    for folder in (ckpt, tmp_path / "model"):
        pickled = [str(p) for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
        assert not pickled, pickled
    assert any((tmp_path / "model").glob("*.safetensors"))
    for pt in ckpt.glob("*.pt"):  # optimizer, scheduler, RNG: plain tensors and containers only
        assert pt.name in ("optimizer.pt", "scheduler.pt", "rng_state_0.pt"), pt.name
        torch.load(pt, weights_only=True)


def test_torch_load_is_always_weights_only():
    calls = list(_calls(("torch.load",)))
    assert calls, "expected the checkpoint loader's torch.load calls"
    bad = []
    for path, node in calls:
        kw = {k.arg: k.value for k in node.keywords}
        if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
            bad.append(f"{path}:{node.lineno}")
    assert not bad, f"torch.load without weights_only=True: {bad}"
    pickle_loads = [f"{p}:{n.lineno}" for p, n in _calls(("pickle.load", "pickle.loads", "dill.load", "dill.loads",
                                                          "joblib.load", "cloudpickle.load", "cloudpickle.loads"))]
    # the one pickle.loads: verifier worker processes unpickle functions their own parent sent over
    # a pipe (multiprocessing IPC), never bytes from a file or the network
    assert all(p.startswith("verifiers/workers.py:") for p in pickle_loads), pickle_loads


def test_no_remote_code_from_model_repos():
    bad = []
    for path, node in _calls(("from_pretrained",)):
        for k in node.keywords:
            if k.arg == "trust_remote_code" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                bad.append(f"{path}:{node.lineno}")
    assert not bad, f"from_pretrained with trust_remote_code: {bad}"


# -- plugin code ------------------------------------------------------------------------------------
#: every dynamic import in the package, and why its target is not attacker-chosen
REVIEWED_DYNAMIC_IMPORTS = {
    "rlenv/__init__.py": "lazy attributes of the rlenv package itself (the fixed _EXPORTS table) and the fixed "
                         "target of the deprecated rlenv.spec module alias (rlenv.runspec)",
    "rlenv/cli.py": "lazy import of fixed rlenv/trainers modules",
    "rlenv/engines/__init__.py": "engine modules from the fixed ENGINES table",
        "rlenv/runspec.py": "modules the spec names under `plugins:` (an explicit import, as a line of Python); "
                        "'module:attr' of the moved names table",
    "trainers/stages.py": "'module:Class' targets written in register_stage(...) calls",
    "rlenv/registry.py": "'module:attr' entry points written in register(...) calls",
    "verifiers/__init__.py": "lazy attributes of the verifiers package itself",
    "tasks/_rg_guards.py": "reasoning-gym scorer modules from the fixed EVAL_SCORER_MODULES table (to patch their eval)",
    "verifiers/registry.py": "'module:attr' targets written in register(...) calls",
    "verifiers/workers.py": "'module:function' paths the pool's own callers name (the math comparison)",
    "trainers/__init__.py": "lazy attributes of the trainers package itself",
}


def test_dynamic_imports_are_reviewed():
    found = {str(p) for p, _ in _calls(("import_module", "__import__"))
             if not str(p).startswith(("benchmarks/", "examples/"))}
    assert found <= set(REVIEWED_DYNAMIC_IMPORTS), f"new dynamic imports to review: {found - set(REVIEWED_DYNAMIC_IMPORTS)}"
    for path, tree in _sources():  # no exec/eval of data outside the sandboxed code runner
        rel = str(path.relative_to(ROOT))
        if rel.startswith("verifiers/code/"):
            continue  # runs model code inside the sandbox / trusted test asserts (docs/sandbox.md)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval"):
                pytest.fail(f"{rel}:{node.lineno} calls {node.func.id}()")


def test_only_entry_points_and_explicit_module_attr_run_plugin_code(tmp_path):
    """A module that leaves a marker when imported: naming it in an env id, a verifier name, a spec
    or env kwargs imports nothing; an explicit ``register(name, "module:attr")`` does."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "imported"
    (site / "zz_marker_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                           "def factory(**kw):\n    raise RuntimeError('not an env')\n"
                                           "def verifier(completion, task):\n    return 1.0\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: preset:tiny\nenv: {id: 'zz_marker_mod:factory', kwargs: {parser: 'zz_marker_mod:verifier'}}\n"
                    "stages: [{sft: {}}]\n")
    code = textwrap.dedent(f"""
        import json, os, warnings
        warnings.simplefilter("ignore")
        import rlenv, verifiers
        from rlenv.cli import main
        marker = {str(marker)!r}
        out = {{}}
        for name, attempt in [
            ("env id", lambda: rlenv.make("zz_marker_mod:factory")),
            ("env id v0", lambda: rlenv.make("zz_marker_mod:factory-v0")),
            ("verifier name", lambda: verifiers.get("zz_marker_mod:verifier")),
            ("arithmetic kwargs", lambda: rlenv.make("arithmetic-v0", system_prompt="zz_marker_mod:verifier")),
        ]:
            try:
                attempt()
                out[name] = "no error"
            except Exception as e:
                out[name] = type(e).__name__
        out["check"] = main(["check", {str(spec)!r}])
        out["imported_before_register"] = os.path.exists(marker)
        verifiers.register("zz_explicit", "zz_marker_mod:verifier")  # the user wrote module:attr
        out["explicit"] = verifiers.get("zz_explicit")("x", None)
        out["imported_after_register"] = os.path.exists(marker)
        print(json.dumps(out))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["imported_before_register"] is False, out
    for name in ("env id", "env id v0", "verifier name"):  # unknown names: an error, not an import
        assert out[name].endswith("Error"), out
    assert out["arithmetic kwargs"] == "no error"  # a string value is only a string
    assert out["check"] == 2, out
    assert out["explicit"] == 1.0 and out["imported_after_register"] is True

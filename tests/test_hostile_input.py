"""Hostile and broken input: each gets one clear error naming the culprit and saying what to do —
never a traceback — and nothing is written half-way.

Covered: fuzzed YAML specs and overrides through ``rlenv check`` (hypothesis), a data file with
missing columns, an empty data set, non-UTF-8 bytes in a spec and in a data file, a model path that
does not exist, a tokenizer without a chat template, registry ids with a typo, and a verifier plugin
whose import fails (the others still load; the error names the plugin).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlenv
from rlenv.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "arithmetic_sft_grpo.yaml"


def run_cli(argv: list) -> tuple[int, str, str]:
    """``rlenv <argv>`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_clean_error(rc: int, err: str, command: str, *culprits: str) -> None:
    """Exit status 2, every stderr line an ``rlenv <cmd>: error:`` line, no traceback, culprits named."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith(f"rlenv {command}: error: ") for line in lines), err
    assert "Traceback" not in err
    for c in culprits:
        assert c in err, (c, err)


# -- fuzzed specs -----------------------------------------------------------------------------
SPEC_KEYS = ["name", "model", "path", "lora", "r", "alpha", "env", "id", "kwargs", "digits", "stages", "sft", "grpo",
             "ppo", "dpo", "max_steps", "learning_rate", "beta", "group_size", "engine", "sampling", "temperature",
             "max_new_tokens", "logging", "report_to", "output_dir", "seed", "curriculum", "knob", "levels"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["preset:tiny", "arithmetic-v0", "sft", "grpo", "hf",
                                                           "/no/such/model", "1e-3", "-1", "~", "!!", "&a"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(SPEC_KEYS), st.text(max_size=8)),
                                                 inner, max_size=5)), max_leaves=25)


def _mutated_example(draw_path, value):
    """The example spec with one value (at a path of keys drawn from it) replaced."""
    data = yaml.safe_load(EXAMPLE.read_text())
    node = data
    for step in draw_path:
        if isinstance(node, dict) and node:
            key = sorted(node, key=str)[step % len(node)]
        elif isinstance(node, list) and node:
            key = step % len(node)
        else:
            break
        if not isinstance(node[key], (dict, list)):
            node[key] = value
            return data
        node = node[key]
    if isinstance(node, dict):
        node["unexpected_key"] = value
    return data


SPEC_TEXTS = st.one_of(
    st.text(max_size=300),  # any text at all
    VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),  # any YAML document
    st.dictionaries(st.sampled_from(SPEC_KEYS), VALUES, max_size=6).map(yaml.safe_dump),  # spec-shaped
    st.builds(_mutated_example, st.lists(st.integers(0, 50), min_size=1, max_size=5), VALUES).map(yaml.safe_dump),
    st.binary(max_size=200),  # bytes, often not UTF-8
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPEC_TEXTS)
def test_fuzzed_specs_validate_or_fail_in_one_line(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        rc, out, err = run_cli(["check", str(path)])
        if rc == 0:
            assert out.startswith("ok: ") and not err
        else:
            assert_clean_error(rc, err, "check", str(path))
        assert [p.name for p in Path(d).iterdir()] == ["spec.yaml"], "check wrote something"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=30),
                          st.builds("{}={}".format, st.sampled_from(["stages[0].sft.max_steps", "model.lora.r",
                                                                     "env.kwargs.digits", "seed", "stages[9].x",
                                                                     "engine.sampling.temperature", "x..y", "[0]"]),
                                    st.text(max_size=15))), max_size=3))
def test_fuzzed_overrides_validate_or_fail_in_one_line(overrides):
    rc, out, err = run_cli(["check", str(EXAMPLE), *overrides])
    if rc == 0:
        assert out.startswith("ok: ")
    else:
        assert_clean_error(rc, err, "check")


def test_yaml_tags_that_build_python_objects_are_rejected(tmp_path):
    spec = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    spec.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\nenv: arithmetic-v0\n'
                    f'stages: [{{sft: {{}}}}]\n')
    rc, _, err = run_cli(["check", str(spec)])
    assert_clean_error(rc, err, "check", "evil.yaml", "python/object")
    assert not marker.exists()


# -- data files -------------------------------------------------------------------------------
def _gsm8k(tmp_path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_data_file_with_missing_columns(tmp_path):
    p = _gsm8k(tmp_path, "q.jsonl", b'{"question": "What is 1+1?"}\n')
    with pytest.raises(ValueError, match=r"'question' and 'answer' columns, got \['question'\]"):
        rlenv.make("gsm8k-v0", path=str(p))  # at build time, not mid-run
    rc, _, err = run_cli(["eval", "gsm8k-v0", "--model", "preset:micro", "--env-kwarg", f"path={p}"])
    assert_clean_error(rc, err, "eval", "answer")
    # a column mapping that names a missing column
    from rlenv.sources import DatasetSource

    with pytest.raises(ValueError, match=r"columns \['problem'\] are not in the dataset"):
        DatasetSource.from_files(str(p), columns={"prompt": "problem"})


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_data_set(tmp_path, content):
    p = _gsm8k(tmp_path, "empty.jsonl", content)
    with pytest.raises(ValueError, match=r"empty\.jsonl.*(is empty|holds no rows)"):
        rlenv.make("gsm8k-v0", path=str(p))
    rc, _, err = run_cli(["eval", "gsm8k-v0", "--model", "preset:micro", "--env-kwarg", f"path={p}"])
    assert_clean_error(rc, err, "eval", "empty.jsonl")


def test_empty_training_data(micro_model_dir, tmp_path):
    from trainers.config import SFTConfig
    from trainers.sft import SFTTrainer

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="training data is empty"):
        SFTTrainer(micro_model_dir, SFTConfig(output_dir=str(out), max_steps=2, report_to="none",
                                              progress_bar=False), train_dataset=[]).train()
    assert not out.exists() or not any(out.rglob("*"))


def test_non_utf8_data_file(tmp_path):
    p = _gsm8k(tmp_path, "latin1.jsonl", '{"question": "café?", "answer": "#### 2"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl.*not UTF-8 text \(byte 0xe9 at offset 17\)"):
        rlenv.make("gsm8k-v0", path=str(p))


def test_non_utf8_spec(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(EXAMPLE.read_bytes().replace(b"name: arithmetic-sft-grpo", b"name: caf\xe9"))
    rc, _, err = run_cli(["check", str(spec)])
    assert_clean_error(rc, err, "check", "latin1.yaml", "not UTF-8", "0xe9")
    assert len(err.strip().splitlines()) == 1


# -- models and tokenizers ----------------------------------------------------------------------
def test_model_path_that_does_not_exist(tmp_path):
    nope = str(tmp_path / "no" / "such" / "model")
    out = tmp_path / "out"
    for argv, cmd in ((["check", str(EXAMPLE), f"model={nope}"], "check"),
                      (["train", str(EXAMPLE), f"model={nope}", f"output_dir={out}"], "train"),
                      (["eval", "arithmetic-v0", "--model", nope], "eval")):
        rc, _, err = run_cli(argv)
        assert_clean_error(rc, err, cmd, nope, "does not exist")
        assert len(err.strip().splitlines()) == 1
    assert not out.exists(), "a run that cannot start writes nothing"
    from trainers.sft import SFTTrainer

    with pytest.raises(FileNotFoundError, match="does not exist"):
        SFTTrainer(nope, train_dataset=[{"prompt": "a", "completion": "b"}])


def test_tokenizer_without_chat_template(micro_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rlenv.engines.hf import encode_prompt

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template.*chat messages"):
        encode_prompt(tok, [{"role": "user", "content": "What is 1 + 1?"}])
    assert encode_prompt(tok, "What is 1 + 1?")  # plain-string prompts still work
    # a saved model folder whose tokenizer has no template: eval says so in one line
    folder = tmp_path / "no_template"
    shutil.copytree(micro_model_dir, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in folder.glob("chat_template.*"):
        extra.unlink()
    from rlenv.evaluation import evaluate

    with pytest.raises(ValueError, match="no chat template"):
        evaluate(rlenv.make("arithmetic-v0"), str(folder), n=1, k=[1], num_tasks=1, max_new_tokens=2)


# -- registries -------------------------------------------------------------------------------
def test_registry_ids_with_a_typo():
    with pytest.raises(LookupError, match="Did you mean `arithmetic-v0`"):
        rlenv.make("arithmetc-v0")
    import verifiers

    with pytest.raises(LookupError, match="Did you mean 'math'"):
        verifiers.get("mathh")
    rc, _, err = run_cli(["eval", "arithmetc-v0", "--model", "preset:micro"])
    assert_clean_error(rc, err, "eval", "arithmetc-v0", "arithmetic-v0")
    rc, _, err = run_cli(["check", str(EXAMPLE), "env.id=arithmetc-v0"])
    assert_clean_error(rc, err, "check", "env.id", "arithmetic-v0")


def test_verifier_plugin_whose_import_fails(tmp_path):
    """Two entry points in group ``rlenv.verifiers``: one imports fine and registers a verifier, one
    raises on import. The failure names the plugin; the good plugin and the built-ins load."""
    import subprocess

    site = tmp_path / "site"
    (site / "zz_plug-0.1.dist-info").mkdir(parents=True)
    (site / "zz_plug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: zz-plug\nVersion: 0.1\n")
    (site / "zz_plug-0.1.dist-info" / "entry_points.txt").write_text(
        "[rlenv.verifiers]\nzz_good = zz_good_plugin\nzz_broken = zz_broken_plugin\n")
    (site / "zz_good_plugin.py").write_text(textwrap.dedent("""
        import verifiers

        @verifiers.register("zz_shout")
        def shout(completion, task):
            return float(str(completion).isupper())
    """))
    (site / "zz_broken_plugin.py").write_text("import no_such_dependency_for_rlenv_tests\n")
    code = textwrap.dedent("""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import verifiers
            names = verifiers.list_verifiers()
        from rlenv.plugins import plugin_errors
        print(json.dumps({"names": names, "errors": [str(e) for e in plugin_errors()],
                          "warnings": [str(w.message) for w in caught],
                          "shout": verifiers.get("zz_shout")("HI", None)}))
    """)
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "zz_shout" in out["names"] and out["shout"] == 1.0  # the good plugin loaded
    assert {"math", "code", "exact_match"} <= set(out["names"])  # and the built-ins
    assert len(out["errors"]) == 1
    err = out["errors"][0]
    assert "'zz_broken'" in err and "zz_broken_plugin" in err and "no_such_dependency_for_rlenv_tests" in err
    assert any("zz_broken" in w for w in out["warnings"])

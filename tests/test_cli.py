"""The `rlenv` command: listing, spec checking (one clear line, exit 2, no traceback), help."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlenv.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "arithmetic_sft_grpo.yaml"


def rlenv_cmd(*args, cwd=None):
    """Run the real console entry point in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "rlenv", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd or ROOT)


def write_spec(tmp_path, **patch):
    data = yaml.safe_load(EXAMPLE.read_text())
    for dotted, value in patch.items():
        node = data
        *head, last = dotted.split("/")
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("patch, field", [
    ({"stages/1/grpo/betta": 0.1}, "stages[1].grpo.betta"),
    ({"stages/0/sft/learning_rate": -0.001}, "stages[0].sft.learning_rate"),
])
def test_check_bad_spec_one_line_exit_2(tmp_path, patch, field):
    out = rlenv_cmd("check", write_spec(tmp_path, **patch))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert field in lines[0] and lines[0].startswith("rlenv check: error: ")
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_check_good_spec_and_overrides(capsys):
    assert main(["check", str(EXAMPLE)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["check", str(EXAMPLE), "stages[1].grpo.beta=0.05", "model.lora.r=4"]) == 0
    assert "LoRA r=4" in capsys.readouterr().out
    assert main(["check", str(EXAMPLE), "stages[1].grpo.beta=-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "rlenv check: error: " + str(EXAMPLE) + ": stages[1].grpo.beta: must be >= 0, got -1.0"


def test_check_missing_file(capsys, tmp_path):
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_envs_and_verifiers_lists(capsys):
    assert main(["envs"]) == 0
    assert "arithmetic-v0" in capsys.readouterr().out
    assert main(["verifiers"]) == 0
    assert capsys.readouterr().out.strip()  # the verifier registry printed its table


def test_eval_unknown_env_is_a_usage_error(capsys):
    assert main(["eval", "arithmatic-v0", "--model", "preset:tiny"]) == 2
    assert "did you mean `arithmetic-v0`" in capsys.readouterr().err.lower()
    assert main(["eval", "arithmetic-v0", "--model", "preset:tiny", "--env-kwarg", "digits"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_train_validates_before_running(capsys, tmp_path):
    assert main(["train", str(write_spec(tmp_path, **{"stages/1/grpo/group_sise": 4}))]) == 2
    assert "did you mean `group_size`" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["envs"], ["verifiers"], ["check"], ["eval"], ["train"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv + ["--help"])
    assert ei.value.code == 0
    assert "usage: rlenv" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as ei:
        main([])
    assert ei.value.code == 2


def test_eval_end_to_end(micro_model_dir, tmp_path, capsys):
    import json

    out = tmp_path / "samples.jsonl"
    code = main(["eval", "arithmetic-v0", "--model", micro_model_dir, "-n", "2", "-k", "1,2",
                 "--num-tasks", "3", "--max-new-tokens", "6", "--out", str(out), "--env-kwarg", "digits=1"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_tasks"] == 3 and result["n"] == 2 and 0.0 <= result["pass@2"] <= 1.0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {"completion", "reward", "scores"} <= set(rows[0])
    assert main(["eval", "arithmetic-v0", "--model", micro_model_dir, "-n", "1", "-k", "2"]) == 2
    assert "n ≥ k" in capsys.readouterr().err

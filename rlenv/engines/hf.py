"""The default engine: our own decode loop over a transformers model, CPU and GPU.

It shares the trainer's model object (no copy, so there is nothing to sync). One call:

1. **prefill** each distinct prompt once (left-padded batch, only the last position's logits);
2. **expand** the prompt's KV cache ``n`` times into a preallocated :class:`transformers.StaticCache`
   (the prompt is never recomputed per sample);
3. **decode** with a fixed-shape step — forward of one token per row, a 4-D attention mask kept in
   a buffer, sampling on the device (:mod:`rlenv.engines.sampling`), finished rows fed padding —
   so that on CUDA the whole step, sampling included, is captured once in a CUDA graph and replayed
   (``use_cuda_graph``; on by default on CUDA). The host looks at the tokens only every
   ``check_every`` steps (all rows finished? a stop string?), never once per token.

Rows that finish early keep running until all are done (fixed shapes); their extra tokens are cut
by :func:`rlenv.engines.stops.finish_row`.

A decode step that cannot be captured (a model whose forward syncs with the host, say) never fails
silently: with ``strict_cuda_graph`` (or ``RLENV_STRICT_CUDA_GRAPH=1``, which the test suite sets)
it raises :class:`CudaGraphCaptureError`; otherwise it logs a warning with the reason, decodes
eagerly, and counts the failure in :meth:`HFEngine.metrics` (the trainers log it with each rollout).
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
import os
import time
from typing import Any, Optional, Sequence

import torch

from ..chat import encode_prompt  # noqa: F401  (re-exported: engines import it from here)
from . import prefix_attention
from .base import Completion, Engine, SamplingParams
from .sampling import sample_from_logits
from .stops import finish_row, first_stop

logger = logging.getLogger(__name__)

#: set to 1 to make every CUDA-graph capture failure an error (the test suite sets it)
STRICT_ENV = "RLENV_STRICT_CUDA_GRAPH"


class CudaGraphCaptureError(RuntimeError):
    """The decode step could not be captured in a CUDA graph and the engine was told to be strict."""


def eos_token_ids(model: Any, tokenizer: Any) -> list:
    """Every id that ends a completion: the tokenizer's eos and the generation config's."""
    ids = set()
    for v in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
              getattr(tokenizer, "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return sorted(ids)


class _DecodeState:
    """The fixed-shape buffers of one decode run (reused, with its CUDA graph, across calls)."""

    def __init__(self, cache, batch: int, max_len: int, max_new: int, device: torch.device, dtype: torch.dtype,
                 prefix: dict = None):
        self.cache = cache
        self.dtype = dtype  # of the cache (an additive attention mask takes it too)
        self.prefix = prefix  # shared-prefix mode: the prompts' own cache, once per prompt
        self.kv_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.cur = torch.zeros(batch, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.write_pos = torch.zeros(1, dtype=torch.long, device=device)
        self.step_idx = torch.zeros(1, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.out_tokens = torch.zeros(batch, max_new, dtype=torch.long, device=device)
        self.out_logprobs = torch.zeros(batch, max_new, dtype=torch.float32, device=device)
        self.generator = torch.Generator(device=device)
        self.graph = None

    def mutable(self) -> list:
        return [self.kv_valid, self.cur, self.positions, self.write_pos, self.step_idx, self.finished,
                self.out_tokens, self.out_logprobs] + [layer.cumulative_length for layer in self.cache.layers]

    def load_prefix(self, prefill, valid: torch.Tensor) -> None:
        """Copy the prompts' prefill cache (one copy per prompt) and its padding mask in."""
        for dst_k, dst_v, layer in zip(self.prefix["k"], self.prefix["v"], prefill.layers):
            dst_k.copy_(_zero_padding(layer.keys, valid))
            dst_v.copy_(_zero_padding(layer.values, valid))
        self.prefix["mask"].copy_(valid[:, None, None, :])


def _zero_padding(kv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``kv`` ``[rows, heads, L, d]`` with the padding slots zeroed: masked keys get weight 0, and
    0 * NaN would still be NaN."""
    return torch.where(valid[:, None, :, None], kv, torch.zeros((), dtype=kv.dtype, device=kv.device))


def _cast_on_update(layer: Any) -> None:
    """Let a static cache layer take keys and values of another dtype (cast on write), as the dynamic
    cache does by promotion: under autocast a decode step's values arrive in bf16, its keys in float32."""
    update = layer.update

    def update_casting(key_states, value_states, *args, **kwargs):
        return update(key_states.to(layer.keys.dtype), value_states.to(layer.values.dtype), *args, **kwargs)

    layer.update = update_casting


def _describe(e: BaseException) -> str:
    first_line = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first_line}"


class HFEngine(Engine):
    """Generation from a transformers causal LM (or a peft model wrapping one), sharing its weights.

    Args:
        model: the model object (shared with the trainer) or a path / hub id to load.
        tokenizer: its tokenizer (loaded from ``model`` when it is a path).
        max_batch_size: most sequences decoded at once (prompts are chunked to fit).
        use_cuda_graph: capture the decode step in a CUDA graph (default: on when on CUDA; ignored on CPU).
        check_every: decode steps between host checks for "all finished" and stop strings.
        share_prefix: with ``n > 1`` samples per prompt, keep the prompt's key/value cache once per
            prompt and attend to it with :mod:`rlenv.engines.prefix_attention` (exact; ``n``-fold less
            cache traffic per step). ``None`` (default): for the architectures it supports, when the
            prompt is at least as long as ``max_new_tokens``; ``True``: whenever supported; ``False``: never.
        strict_cuda_graph: raise :class:`CudaGraphCaptureError` when the capture fails instead of
            warning and decoding eagerly (default: the ``RLENV_STRICT_CUDA_GRAPH`` environment variable).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, max_batch_size: int = 256,
                 use_cuda_graph: Optional[bool] = None, check_every: int = 16, dtype: Any = None,
                 share_prefix: Optional[bool] = None, strict_cuda_graph: Optional[bool] = None):
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = str(model)
            cuda = torch.cuda.is_available()
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype or (torch.bfloat16 if cuda else torch.float32))
            if cuda:
                model = model.to("cuda")
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        if tokenizer is None:
            raise ValueError("HFEngine needs a tokenizer when given a model object: HFEngine(model, tokenizer)")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {max_batch_size}")
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.check_every = max(1, int(check_every))
        self._requested_graph = use_cuda_graph
        self._requested_share = share_prefix
        if strict_cuda_graph is None:
            strict_cuda_graph = os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")
        self.strict_cuda_graph = bool(strict_cuda_graph)
        self.graph_capture_failures = 0  # counted over the engine's life (see metrics())
        self.graph_failure_reason: Optional[str] = None
        self._states: collections.OrderedDict = collections.OrderedDict()
        self.last_stats: dict = {}
        self._adopt(model)

    # -- the shared model --------------------------------------------------------------------
    def _adopt(self, model: Any) -> None:
        self.model = model
        # peft injects LoRA layers into the base model, so calling it directly applies the enabled
        # adapters and skips the wrapper's per-call overhead
        get_base = getattr(model, "get_base_model", None)
        self._net = get_base() if callable(get_base) else model
        self.config = self._net.config
        self.device = next(self._net.parameters()).device
        self.dtype = next(self._net.parameters()).dtype
        self.eos_ids = eos_token_ids(self._net, self.tokenizer)
        self._eos_tensor = torch.tensor(self.eos_ids or [-1], dtype=torch.long, device=self.device)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0))
        impl = getattr(self.config, "_attn_implementation", "sdpa") or "sdpa"
        self._mask_kind = "bool" if impl == "sdpa" else "float" if impl == "eager" else "2d"
        self._keep_arg = "logits_to_keep" in inspect.signature(self._net.forward).parameters
        self.use_cuda_graph = self.device.type == "cuda" and self._requested_graph is not False
        self.share_prefix = self._requested_share is not False and prefix_attention.supported(self.config)
        self._states.clear()

    def sync_weights(self, model: Any, adapter_only: bool = False) -> None:
        """Nothing to copy: the engine generates from the trainer's own model object. Given a
        different object (a reloaded model), the engine switches to it."""
        if model is not None and model is not self.model:
            self._adopt(model)

    def release_memory(self) -> None:
        """Drop the decode buffers (static caches) and CUDA graphs with their memory pools, so the
        training phase can use that memory; the next :meth:`generate` builds (and captures) them
        again. The online trainers call it after each rollout."""
        self._states.clear()

    def close(self) -> None:
        """Drop the cached decode buffers and CUDA graphs."""
        self.release_memory()

    def metrics(self) -> dict:
        """Engine health for the trainer's log: ``engine/cuda_graph_capture_failures`` (over the
        engine's life; > 0 means decoding fell back to eager, see the logged warning) and
        ``engine/cuda_graph`` (1 when the last call decoded through a captured graph)."""
        return {"engine/cuda_graph_capture_failures": float(self.graph_capture_failures),
                "engine/cuda_graph": float(self.last_stats.get("cuda_graph", 0.0))}

    # -- public API --------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Any], params: SamplingParams, *,
                 ignore_eos: bool = False) -> list[list[Completion]]:
        """Sample ``params.n`` completions per prompt (see :class:`~rlenv.engines.base.Engine`).

        ``ignore_eos`` forces every completion to ``max_new_tokens`` (benchmarks)."""
        if isinstance(prompts, (str, dict)) or not isinstance(prompts, Sequence):
            raise TypeError("generate() takes a list of prompts; wrap a single prompt in a list")
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        gen_seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        per_chunk = max(1, self.max_batch_size // params.n)
        was_training = self._net.training
        self._net.eval()  # no dropout while sampling; restored for the trainer afterwards
        out: list = []
        start, generated = time.perf_counter(), 0
        self._graph_replays = 0
        try:
            with torch.inference_mode():
                for c, i in enumerate(range(0, len(ids), per_chunk)):
                    rows = self._generate_chunk(ids[i:i + per_chunk], params, gen_seed + c, ignore_eos)
                    for j, comps in enumerate(rows):
                        for comp in comps:
                            comp.prompt_index = i + j
                            generated += len(comp.token_ids)
                    out.extend(rows)
        finally:
            if was_training:
                self._net.train()
        elapsed = time.perf_counter() - start
        self.last_stats = {"generated_tokens": generated, "time_s": elapsed,
                           "tokens_per_s": generated / max(elapsed, 1e-9),
                           "cuda_graph": float(self._graph_replays > 0),
                           "cuda_graph_capture_failures": float(self.graph_capture_failures)}
        return out

    # -- one chunk ---------------------------------------------------------------------------
    def _generate_chunk(self, prompt_ids: list, params: SamplingParams, seed: int, ignore_eos: bool) -> list:
        from transformers import DynamicCache

        P, n, max_new = len(prompt_ids), params.n, params.max_new_tokens
        L = max(len(p) for p in prompt_ids)
        if self.use_cuda_graph:
            L = -(-L // 64) * 64  # bucketed prompt length: the same graph serves many calls
        B, dev = P * n, self.device
        input_ids = torch.full((P, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((P, L), dtype=torch.long)
        for r, p in enumerate(prompt_ids):
            input_ids[r, L - len(p):] = torch.tensor(p)
            attn[r, L - len(p):] = 1
        input_ids, attn = input_ids.to(dev), attn.to(dev)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)

        prefill = DynamicCache(config=self.config)
        kw = {"logits_to_keep": 1} if self._keep_arg else {}
        logits = self._net(input_ids=input_ids, attention_mask=attn, position_ids=positions,
                           past_key_values=prefill, use_cache=True, **kw).logits[:, -1]

        # auto: only where the prompt part is at least the generated part — with long generations from
        # short prompts the per-row own-token attention dominates and one fused SDPA call is faster
        shared = self.share_prefix and n > 1 and (self._requested_share is True or L >= max_new)
        # the cache takes the prefill cache's dtype: the weights' dtype, or — when the trainer's mixed
        # precision wrapped the shared model's forward in autocast — float32 (keys leave the rotary
        # embedding in float32, values leave v_proj in bf16; the prefill cache promotes both)
        kv_dtype = prefill.layers[0].keys.dtype
        key = (B, n, L + max_new, max_new, params.temperature, params.top_k, params.top_p, ignore_eos, shared,
               kv_dtype)
        if shared:  # the prompt cache once per prompt; the step's own cache holds generated tokens only
            st = self._state(key, B, max_new, max_new, kv_dtype, prefix_shape=(P, L))
            st.load_prefix(prefill, attn.bool())
            for static in st.cache.layers:
                static.cumulative_length.fill_(0)
            st.kv_valid.zero_()
            st.write_pos.fill_(0)
        else:
            st = self._state(key, B, L + max_new, max_new, kv_dtype)
            valid = attn.bool().repeat_interleave(n, 0)
            for static, dyn in zip(st.cache.layers, prefill.layers):
                for dst, src in ((static.keys, dyn.keys), (static.values, dyn.values)):
                    dst[:, :, :L].copy_(_zero_padding(src.repeat_interleave(n, 0), valid))
                static.cumulative_length.fill_(L)
            st.kv_valid.zero_()
            st.kv_valid[:, :L] = valid
            st.write_pos.fill_(L)
        del prefill
        st.positions.copy_(attn.sum(-1).repeat_interleave(n, 0))
        st.step_idx.fill_(1)
        st.finished.zero_()
        st.generator.manual_seed(seed)

        first, first_lp = sample_from_logits(logits.repeat_interleave(n, 0), params.temperature, params.top_k,
                                             params.top_p, generator=st.generator)
        st.out_tokens[:, 0] = first
        st.out_logprobs[:, 0] = first_lp
        st.cur.copy_(first)
        if not ignore_eos:
            st.finished.copy_(self._is_eos(first))

        steps = 1
        stops = [s for s in params.stop if s]
        with prefix_attention.decoding_with_shared_prefix(self.config) if shared else contextlib.nullcontext():
            while steps < max_new:
                if not ignore_eos or stops:
                    if steps % self.check_every == 1 or self.check_every == 1:
                        if self._all_done(st, steps, stops):
                            break
                self._run_step(st, params, ignore_eos)
                steps += 1

        toks = st.out_tokens[:, :steps].tolist()
        lps = st.out_logprobs[:, :steps].tolist()
        eos = [] if ignore_eos else self.eos_ids
        rows = [finish_row(toks[b], lps[b], self.tokenizer, eos, stops) for b in range(B)]
        return [rows[r * n:(r + 1) * n] for r in range(P)]

    def _is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        # compared against a tensor made once: a host-to-device copy inside a CUDA graph capture fails
        return (tokens[:, None] == self._eos_tensor).any(-1)

    def _all_done(self, st: _DecodeState, steps: int, stops: list) -> bool:
        """The host check: mark rows whose text holds a stop string finished; are all rows done?"""
        if stops:
            finished = st.finished.tolist()
            rows = st.out_tokens[:, :steps].tolist()
            hit = [b for b, row in enumerate(rows) if not finished[b]
                   and first_stop(self.tokenizer.decode(row, skip_special_tokens=True), stops) is not None]
            if hit:
                st.finished[torch.tensor(hit, device=st.finished.device)] = True
        return bool(st.finished.all())

    def _state(self, key: tuple, batch: int, max_len: int, max_new: int, dtype: torch.dtype,
               prefix_shape: tuple = None) -> _DecodeState:
        from transformers import StaticCache

        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        cache = StaticCache(config=self.config, max_cache_len=max_len)
        if any(type(layer).__name__ != "StaticLayer" for layer in cache.layers):
            raise NotImplementedError(
                f"HFEngine supports full-attention decoders; {type(self._net).__name__} has sliding-window or "
                f"linear-attention layers — use the vllm engine for it")
        text_cfg = self.config.get_text_config(decoder=True)
        heads = getattr(text_cfg, "num_key_value_heads", None) or text_cfg.num_attention_heads
        head_dim = getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
        cache.early_initialization(batch, heads, head_dim, dtype, self.device)
        for layer in cache.layers:
            _cast_on_update(layer)
        prefix = None
        if prefix_shape is not None:
            P, L = prefix_shape
            shape = (P, heads, L, head_dim)
            prefix = {"k": [torch.zeros(shape, dtype=dtype, device=self.device) for _ in cache.layers],
                      "v": [torch.zeros(shape, dtype=dtype, device=self.device) for _ in cache.layers],
                      "mask": torch.zeros((P, 1, 1, L), dtype=torch.bool, device=self.device), "n": batch // P}
        st = _DecodeState(cache, batch, max_len, max_new, self.device, dtype, prefix)
        self._states[key] = st  # keep the two latest shapes (and their CUDA graphs) for the next calls
        while len(self._states) > 2:
            self._states.popitem(last=False)
        return st

    # -- the decode step ---------------------------------------------------------------------
    def _step(self, st: _DecodeState, params: SamplingParams, ignore_eos: bool) -> None:
        """One token for every row, entirely on the device and in place (capturable)."""
        st.kv_valid.index_fill_(1, st.write_pos, True)
        extra = {}
        if st.prefix is not None:  # shared-prefix attention: own tokens' mask here, the prompt's in the prefix
            mask, extra = st.kv_valid[:, None, None, :], {"rlenv_prefix": st.prefix}
        elif self._mask_kind == "bool":
            mask = st.kv_valid[:, None, None, :]
        elif self._mask_kind == "float":
            mask = torch.zeros(st.kv_valid.shape, dtype=st.dtype, device=st.kv_valid.device).masked_fill(
                ~st.kv_valid, torch.finfo(st.dtype).min)[:, None, None, :]
        else:
            mask = st.kv_valid.long()
        logits = self._net(input_ids=st.cur[:, None], attention_mask=mask, position_ids=st.positions[:, None],
                           past_key_values=st.cache, use_cache=True, **extra).logits[:, -1]
        tok, lp = sample_from_logits(logits, params.temperature, params.top_k, params.top_p, generator=st.generator)
        if not ignore_eos:
            tok = torch.where(st.finished, self.pad_id, tok)
            st.finished.logical_or_(self._is_eos(tok))
        st.out_tokens.index_copy_(1, st.step_idx, tok[:, None])
        st.out_logprobs.index_copy_(1, st.step_idx, lp[:, None])
        st.cur.copy_(tok)
        st.positions.add_(1)
        st.write_pos.add_(1)
        st.step_idx.add_(1)

    def _run_step(self, st: _DecodeState, params: SamplingParams, ignore_eos: bool) -> None:
        if self.use_cuda_graph and st.graph is None:
            st.graph = self._capture(st, params, ignore_eos) or False
        if st.graph:
            st.graph.replay()
            self._graph_replays += 1
        else:
            self._step(st, params, ignore_eos)

    def _capture(self, st: _DecodeState, params: SamplingParams, ignore_eos: bool):
        """Record one decode step as a CUDA graph. A failure leaves the decode state as it was and
        raises (strict) or warns, is counted, and switches the engine to eager decoding."""
        saved = [t.clone() for t in st.mutable()]
        rng = st.generator.get_state()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up runs (allocator, lazy inits) outside the graph
                for _ in range(2):
                    self._step(st, params, ignore_eos)
            torch.cuda.current_stream().wait_stream(side)
            self._restore(st, saved, rng)
            # weights autocast cast before (under a caller's autocast context) must not be baked into the
            # graph: it has to cast the current weights on every replay
            torch.clear_autocast_cache()
            graph = torch.cuda.CUDAGraph()
            if hasattr(graph, "register_generator_state"):
                graph.register_generator_state(st.generator)
            with torch.cuda.graph(graph):
                self._step(st, params, ignore_eos)
            return graph
        except Exception as e:  # noqa: BLE001 - any failure is reported below, never swallowed
            # ending a broken capture raises a second error on top of the first: name both
            reason = _describe(e) if e.__context__ is None else f"{_describe(e.__context__)}; then {_describe(e)}"
            self.graph_capture_failures += 1
            self.graph_failure_reason = reason
            self.use_cuda_graph = False
            self._restore(st, saved, rng)  # warm-up steps may have run: undo them
            if self.strict_cuda_graph:
                raise CudaGraphCaptureError(
                    f"HFEngine: capturing the decode step of {type(self._net).__name__} in a CUDA graph failed "
                    f"({reason}). Fix the model (no host syncs or data-dependent shapes in its forward), or "
                    f"pass use_cuda_graph=False; unset {STRICT_ENV} / strict_cuda_graph to decode eagerly "
                    f"with a warning instead") from e
            logger.warning("HFEngine: CUDA graph capture of the decode step failed (%s); decoding eagerly from "
                           "now on, which is several times slower on a GPU. Counted in the metric "
                           "engine/cuda_graph_capture_failures.", reason)
            return None

    @staticmethod
    def _restore(st: _DecodeState, saved: list, rng: torch.Tensor) -> None:
        for dst, src in zip(st.mutable(), saved):
            dst.copy_(src)
        st.generator.set_state(rng)

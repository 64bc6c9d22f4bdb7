"""Token log-probs and entropy from a chunked LM head: never a ``[tokens, vocab]`` float32 tensor.

Every policy loss needs ``log p(token)`` at each completion position, and the obvious way — the
model's ``[B, T, V]`` logits, a float32 copy (accelerate's output conversion under mixed precision),
one more for a temperature, ``log_softmax`` — holds several ``tokens × vocab × 4`` bytes at once:
0.6 GB per 1,000 tokens at Qwen's 151,936-token vocabulary, and autograd keeps one of them until
the backward pass. Here the model's LM head is replaced, for one forward, by
:class:`ChunkedHeadLogprobs`: it receives the last hidden states and, ``chunk`` tokens at a time,
computes the logits, their log-sum-exp, the label's log-prob and (optionally) the entropy. It keeps
only the hidden states and one float per token for the backward pass, where it recomputes each
chunk's logits (one more LM-head matmul, the price of the memory; fused-linear cross-entropy kernels
make the same trade).

The matmul runs in the dtype the model's own head would use: the autocast dtype under mixed
precision (bf16 on a GPU), else the weight's dtype; softmax statistics are always float32.

Architectures whose head is a plain ``nn.Linear`` applied to the last hidden state
(:data:`PLAIN_HEAD_MODEL_TYPES`) take this path; others (logit soft-capping or scaling, a LoRA-wrapped
head, FSDP / ZeRO-3 sharded weights) fall back to the model's logits, chunked over rows.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
import torch.nn.functional as F

#: decoder architectures whose logits are exactly ``lm_head(last hidden state)`` (no soft-capping,
#: no logit scaling), so the head can be applied here instead
PLAIN_HEAD_MODEL_TYPES = {"qwen2", "qwen3", "llama", "mistral", "qwen2_moe", "qwen3_moe", "olmo2", "phi3", "gpt2"}
#: float32 bytes of one chunk's logits (64 MiB: 110 tokens at a 151,936-token vocabulary)
CHUNK_BYTES = 64 * 2**20


def chunk_tokens(vocab_size: int, chunk_bytes: Optional[int] = None) -> int:
    """Tokens per chunk so that one chunk's float32 logits take about ``chunk_bytes`` (default
    :data:`CHUNK_BYTES`)."""
    return max(16, (chunk_bytes or CHUNK_BYTES) // (4 * max(1, vocab_size)))


def _compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The dtype the model's own ``F.linear`` would run in here (autocast's, else the weight's)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def _chunk_stats(z: torch.Tensor, labels: torch.Tensor, with_entropy: bool) -> tuple:
    """``z`` float32 logits ``[n, V]`` (already divided by the temperature; overwritten) → label
    log-probs, log-sum-exp and entropy (or None), each ``[n]``."""
    lse = torch.logsumexp(z, dim=-1)
    picked = z.gather(-1, labels[:, None]).squeeze(-1) - lse
    ent = None
    if with_entropy:
        z.sub_(lse[:, None])  # now log p, in place
        ent = -(z.exp().mul_(z)).sum(-1)
    return picked, lse, ent


class ChunkedHeadLogprobs(torch.autograd.Function):
    """``(hidden [N, H], weight [V, H], bias [V] | None, labels [N])`` → ``(log p(labels) [N],
    entropy [N])`` in float32 under ``softmax((hidden @ weight.T + bias) / temperature)``.

    The entropy carries no gradient (it is a metric here); the log-probs carry gradients to
    ``hidden``, ``weight`` and ``bias``. Statistics and the weight-gradient sum are float32 (float64
    for float64 weights, as in the gradient check).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, temperature: float, chunk: int, with_entropy: bool):
        dtype = _compute_dtype(hidden.device, weight)
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        stat = torch.promote_types(dtype, torch.float32)  # float32, or float64 for float64 weights
        n = hidden.shape[0]
        logprobs = torch.empty(n, dtype=stat, device=hidden.device)
        lse = torch.empty_like(logprobs)
        entropy = torch.empty_like(logprobs) if with_entropy else None
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, n, chunk):
                z = F.linear(hidden[s:s + chunk].to(dtype), w, b).to(stat)
                if temperature != 1.0:
                    z.div_(temperature)
                lp, ls, ent = _chunk_stats(z, labels[s:s + chunk], with_entropy)
                logprobs[s:s + chunk], lse[s:s + chunk] = lp, ls
                if with_entropy:
                    entropy[s:s + chunk] = ent
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.dtype, ctx.temperature, ctx.chunk = dtype, temperature, chunk
        if entropy is None:
            entropy = logprobs.new_zeros(0)
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        dtype, t, chunk = ctx.dtype, ctx.temperature, ctx.chunk
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        stat = lse.dtype
        g = grad_logprobs.to(stat)
        d_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        d_weight = torch.zeros(weight.shape, dtype=stat, device=weight.device) if ctx.needs_input_grad[1] else None
        d_bias = torch.zeros(bias.shape, dtype=stat, device=bias.device) \
            if bias is not None and ctx.needs_input_grad[2] else None
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s:s + chunk].to(dtype)
                z = F.linear(h, w, b).to(stat)
                if t != 1.0:
                    z.div_(t)
                # d log p(y) / d z = onehot(y) - softmax(z), times the incoming gradient, / temperature
                gs = g[s:s + chunk, None]
                dz = z.sub_(lse[s:s + chunk, None]).exp_().mul_(-gs)
                dz.scatter_add_(-1, labels[s:s + chunk, None], gs)
                if t != 1.0:
                    dz.div_(t)
                if d_bias is not None:
                    d_bias += dz.sum(0)
                dz = dz.to(dtype)
                if d_hidden is not None:
                    d_hidden[s:s + chunk] = (dz @ w).to(hidden.dtype)
                if d_weight is not None:
                    d_weight += (dz.t() @ h).to(stat)
        if d_weight is not None:
            d_weight = d_weight.to(weight.dtype)
        if d_bias is not None:
            d_bias = d_bias.to(bias.dtype)
        return d_hidden, d_weight, d_bias, None, None, None, None


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], labels: torch.Tensor,
                  temperature: float = 1.0, with_entropy: bool = False, chunk: Optional[int] = None) -> tuple:
    """Log-probs (and entropy) of ``labels`` ``[...]`` from hidden states ``[..., H]`` through the
    head ``weight [V, H]`` / ``bias``, a chunk of tokens at a time (see :class:`ChunkedHeadLogprobs`).
    Returns ``(logprobs [...], entropy [...] or None)``, float32."""
    shape = labels.shape
    lp, ent = ChunkedHeadLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias,
                                        labels.reshape(-1).long(), float(temperature),
                                        chunk or chunk_tokens(weight.shape[0]), with_entropy)
    return lp.view(shape), (ent.view(shape) if with_entropy else None)


def logits_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                    with_entropy: bool = False, chunk: Optional[int] = None) -> tuple:
    """The same from materialised logits ``[B, T, V]`` (the fallback; a slice such as
    ``logits[:, :-1]`` is read in place): float32 a block of about ``chunk`` positions at a time
    (whole rows when they fit), no full-size copy for the temperature; the entropy is computed
    without gradient. Returns ``[B, T]`` tensors."""
    B, T = labels.shape
    step = chunk or chunk_tokens(logits.shape[-1])
    rows = max(1, step // max(T, 1))
    width = T if rows > 1 else step
    lp_rows, ent_rows = [], []
    for r in range(0, B, rows):
        lps, ents = [], []
        for s in range(0, T, width):
            z = logits[r:r + rows, s:s + width].float()  # a view, converted block by block
            z = z / temperature if temperature != 1.0 else z
            lab = labels[r:r + rows, s:s + width, None].long()
            lps.append(z.gather(-1, lab).squeeze(-1) - torch.logsumexp(z, dim=-1))
            if with_entropy:
                with torch.no_grad():
                    zc = z.detach().reshape(-1, z.shape[-1]).clone()
                    ents.append(_chunk_stats(zc, lab.reshape(-1), True)[2].view(lab.shape[:-1]))
        lp_rows.append(torch.cat(lps, 1))
        if with_entropy:
            ent_rows.append(torch.cat(ents, 1))
    return torch.cat(lp_rows), (torch.cat(ent_rows) if with_entropy else None)


# -- the model-level entry point ---------------------------------------------------------------------
def plain_head(model: Any) -> Optional[torch.nn.Linear]:
    """The model's LM head when :func:`forward_token_logprobs` may apply it itself, else None."""
    if type(model).__name__ == "FullyShardedDataParallel":
        return None
    inner = model
    # DDP, DeepSpeed's engine, torch.compile and trainers.modeling.Reference hold the model in
    # .module / ._orig_mod; a transformers model is the first object with a config
    while getattr(inner, "config", None) is None:
        nxt = getattr(inner, "_orig_mod", None) or getattr(inner, "module", None)
        if nxt is None:
            return None
        inner = nxt
    get_base = getattr(inner, "get_base_model", None)
    inner = get_base() if callable(get_base) else inner
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:  # a peft-wrapped or otherwise special head
        return None
    w = head.weight
    if type(w.data) is not torch.Tensor or w.dim() != 2 or w.numel() == 0 or hasattr(w, "ds_id"):
        return None  # sharded (FSDP DTensor, DeepSpeed ZeRO-3): its full weight exists only inside its forward
    return head


@contextlib.contextmanager
def _head_forward(head: torch.nn.Module, fn) -> Any:
    """Run ``fn`` in place of ``head.forward`` (an instance attribute shadows the class method;
    hooks and wrappers around the module call keep working)."""
    before = head.__dict__.get("forward")
    head.forward = fn
    try:
        yield
    finally:
        if before is not None:
            head.forward = before
        else:
            del head.forward


def forward_token_logprobs(model: Any, labels: torch.Tensor, *, temperature: float = 1.0, with_entropy: bool = False,
                     rows: Optional[torch.Tensor] = None, **inputs) -> tuple:
    """Run ``model(**inputs)`` and score ``labels`` at the positions whose logits it keeps.

    ``inputs`` are the model's keyword arguments (with ``logits_to_keep=k``: the last ``k``
    positions; without it: all). ``labels`` ``[R, k]``: the token each kept position is scored on,
    for batch row ``rows[r]`` (``rows``: an index into the forward's batch — several label rows may
    share one forward row, as a group's samples share their prompt; default: the identity).
    Returns ``(output, logprobs [R, k], entropy [R, k] or None)``; ``output.logits`` is not the
    vocabulary logits when the chunked head ran (one column: the log-probs)."""
    head = plain_head(model)
    if head is None:
        out = model(**inputs)
        logits = out.logits[:, -labels.shape[1]:]
        # index_select, not logits[rows]: its backward adds the shared rows in order (advanced
        # indexing's adds them with atomics across CPU threads, so same-seed runs drifted apart)
        logits = logits.index_select(0, rows) if rows is not None else logits
        lp, ent = logits_logprobs(logits, labels, temperature, with_entropy)
        return out, lp, ent
    result: dict = {}

    def chunked_head(hidden: torch.Tensor) -> torch.Tensor:
        h = hidden[:, -labels.shape[1]:]
        h = h.index_select(0, rows) if rows is not None else h  # in-order backward, as above
        lp, ent = head_logprobs(h, head.weight, head.bias, labels, temperature, with_entropy)
        result["entropy"] = ent
        # returned as the model's "logits" so the log-probs leave through the model's output:
        # wrappers that trace the outputs (DDP's unused-parameter search) see the head's weight
        return lp.unsqueeze(-1)

    with _head_forward(head, chunked_head):
        out = model(**inputs)
    return out, out.logits[..., 0].float(), result["entropy"]

"""Generated tokens/s: our HF engine next to transformers' own ``model.generate``, with its default
dynamic cache and with its static cache.

Every side gets the same model, the same prompts and the same sampling settings (temperature 1,
no top-k/top-p, every sequence forced to the full ``--new-tokens``: ``ignore_eos`` on our side,
``min_new_tokens`` on theirs), in the same process. The references are one batched ``generate``
call over the prompts repeated G times — what TRL's trainer does — with the dynamic cache, and with
``cache_implementation="static"`` (on CUDA transformers then compiles the decode step with
``torch.compile``, CUDA graphs included; the compilation happens in the untimed warm-up).

    python benchmarks/generation.py                      # CPU, tiny model
    python benchmarks/generation.py --gpu                # CUDA, Qwen2.5-0.5B-shaped model, bf16
    python benchmarks/generation.py --size qwen0.5b --batch 64 --new-tokens 256
    python benchmarks/generation.py --no-static-cache   # skip the static-cache reference

It also prints the memory-bandwidth bound of decoding (each step reads every weight once:
``batch × bandwidth / weight bytes`` tokens/s) and our fraction of it. The bandwidth is measured
with a large copy on the device unless ``--bandwidth-gbs`` is given.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlenv.engines.base import SamplingParams  # noqa: E402
from rlenv.engines.hf import HFEngine  # noqa: E402

#: the Qwen2.5-0.5B shape, random weights (no download)
QWEN_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                intermediate_size=4864, vocab_size=151_936, max_position_embeddings=32_768,
                tie_word_embeddings=True, rope_theta=1_000_000.0)


def id_tokenizer(vocab_size: int):
    """A real fast tokenizer whose vocabulary is ``t0 … t{V-1}`` (one word per id): enough to decode
    any id a random model samples."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t1", pad_token="t0")


def build(size: str, device: str, workdir: str):
    """Model and tokenizer, saved and reloaded through ``from_pretrained`` like a hub checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if size in ("tiny", "micro"):
        from rlenv.models.tiny import create_tiny_model

        path = create_tiny_model(Path(workdir) / size, preset=size)
        tok = AutoTokenizer.from_pretrained(path)
    else:
        path = Path(workdir) / size
        torch.manual_seed(0)
        tok = id_tokenizer(QWEN_05B["vocab_size"])
        cfg = Qwen2Config(**QWEN_05B, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        with torch.device(device):  # random initialisation of 0.5 B weights is slow on the host
            Qwen2ForCausalLM(cfg).to(dtype).save_pretrained(path)
        tok.save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tok


def measure_bandwidth(device: str) -> float:
    """Bytes/s of a large on-device copy (read + write)."""
    x = torch.empty(64 * 2**20 // 4 * (16 if device == "cuda" else 1), dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        x.clone()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * 4 / best


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():  # tied embeddings count once
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def timed(fn, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="run on CUDA (default size: qwen0.5b)")
    ap.add_argument("--size", choices=["tiny", "micro", "qwen0.5b"], default=None)
    ap.add_argument("--batch", type=int, default=None, help="sequences in all (prompts × G)")
    ap.add_argument("--group", type=int, default=8, help="G: samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth; measured if absent")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--no-static-cache", action="store_true", help="skip the static-cache generate reference")
    args = ap.parse_args(argv)
    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        ap.error("--gpu given but no CUDA device is available")
    size = args.size or ("qwen0.5b" if args.gpu else "tiny")
    batch = args.batch or (64 if size == "qwen0.5b" else 16)
    new = args.new_tokens or (256 if size == "qwen0.5b" else 64)
    group = max(1, min(args.group, batch))
    if batch % group:
        ap.error(f"--batch {batch} must be a multiple of --group {group}")

    with tempfile.TemporaryDirectory() as workdir:
        model, tok = build(size, device, workdir)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, min(vocab, 256), (args.prompt_len,), generator=gen).tolist()
               for _ in range(batch // group)]
    # not strict: a failed capture still gives numbers, and the failure is printed and summarised
    engine = HFEngine(model, tok, max_batch_size=batch, use_cuda_graph=not args.no_cuda_graph, strict_cuda_graph=False)
    params = SamplingParams(n=group, temperature=1.0, max_new_tokens=new, seed=0)

    rows = torch.tensor([p for p in prompts for _ in range(group)], device=device)
    ref_kwargs = dict(attention_mask=torch.ones_like(rows), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                      max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id)

    def ours():
        out = engine.generate(prompts, params, ignore_eos=True)
        assert sum(len(c.token_ids) for g in out for c in g) == batch * new

    def reference(**extra):
        with torch.inference_mode():
            out = model.generate(rows, **ref_kwargs, **extra)
        assert out.shape == (batch, args.prompt_len + new)

    # warm-up every side (allocator, CUDA graph capture for the shape, lazy inits), then time
    small = SamplingParams(n=group, max_new_tokens=min(new, 8), seed=1)
    engine.generate(prompts, small, ignore_eos=True)
    ours()
    with torch.inference_mode():
        model.generate(rows, **dict(ref_kwargs, max_new_tokens=8, min_new_tokens=8))
    t_ours = timed(ours, device, args.repeats)
    t_ref = timed(reference, device, args.repeats)
    tokens = batch * new
    bw = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else measure_bandwidth(device)
    wbytes = weight_bytes(model)
    bound = batch * bw / wbytes
    ours_tps, ref_tps = tokens / t_ours, tokens / t_ref

    def results(static_tps):
        return {"device": device_name(device), "model": size, "batch": batch, "new_tokens": new,
                "ours_tok_s": ours_tps, "hf_generate_tok_s": ref_tps, "hf_static_tok_s": static_tps or 0.0,
                "bound_tok_s": bound, "fraction_of_bound": ours_tps / bound,
                "cuda_graph": int(engine.last_stats.get("cuda_graph", 0.0)),
                "cuda_graph_capture_failures": engine.graph_capture_failures,
                "speedup_vs_static": ours_tps / static_tps if static_tps else 0.0, "speedup": ours_tps / ref_tps}

    t_static, static_error = None, None
    if not args.no_static_cache:
        # the static-cache warm-up compiles the model (minutes on a GPU): what is measured so far is
        # printed first, so a run stopped by a time limit keeps it (the last summary line wins)
        print(summary(results(None)) + " partial=static_cache_pending", flush=True)
        try:
            reference(cache_implementation="static")  # the warm-up compiles (same shapes as the timed calls)
            t_static = timed(lambda: reference(cache_implementation="static"), device, args.repeats)
        except Exception as e:  # noqa: BLE001 - reported in the table and the summary, the rest still runs
            static_error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
    static_tps = tokens / t_static if t_static else None
    res = results(static_tps)

    print(f"device: {res['device']}   model: {size} ({wbytes / 1e6:.1f} MB of weights, "
          f"{str(model.dtype).replace('torch.', '')})   batch {batch} = {batch // group} prompts × {group}, "
          f"{args.prompt_len}-token prompts, {new} new tokens, median of {args.repeats}")
    print(f"{'engine':<44}{'time s':>10}{'tok/s':>12}{'vs generate':>13}")
    print(f"{'transformers generate (dynamic cache)':<44}{t_ref:>10.3f}{ref_tps:>12.1f}{1.0:>12.2f}x")
    if static_tps:
        print(f"{'transformers generate (static cache)':<44}{t_static:>10.3f}{static_tps:>12.1f}"
              f"{static_tps / ref_tps:>12.2f}x")
    elif static_error:
        print(f"{'transformers generate (static cache)':<44}failed: {static_error}")
    label = "rlenv HFEngine (static cache" + (", CUDA graph)" if engine.last_stats.get("cuda_graph") else ")")
    print(f"{label:<44}{t_ours:>10.3f}{ours_tps:>12.1f}{ours_tps / ref_tps:>12.2f}x")
    if engine.graph_capture_failures:
        print(f"CUDA graph capture FAILED, decoded eagerly: {engine.graph_failure_reason}")
    print(f"memory-bandwidth bound: {batch} × {bw / 1e9:.1f} GB/s / {wbytes / 1e6:.1f} MB = {bound:,.0f} tok/s; "
          f"ours is {100 * ours_tps / bound:.2f}% of it")
    print(summary(res))
    return res


def summary(res: dict) -> str:
    return "summary: " + " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={str(v).replace(' ', '_')}" for k, v in res.items())


if __name__ == "__main__":
    main()

"""The HF engine on the tiny random model: seeds, stop strings, eos, log-probs against a fresh forward."""

from __future__ import annotations

import pytest
import torch

from rlenv.engines import make_engine
from rlenv.engines.base import SamplingParams
from rlenv.engines.hf import HFEngine, encode_prompt
from rlenv.engines.sampling import process_logits, sampling_logprobs

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = [
    [{"role": "user", "content": "What is 12+7?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi to the whole world"}],
    [{"role": "user", "content": "x"}],
]


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def engine(model_and_tok):
    return HFEngine(*model_and_tok)


def fresh_logprobs(model, prompt_ids, comp_ids, params):
    """Log-probs of ``comp_ids`` after ``prompt_ids`` from one unpadded forward of the full sequence."""
    ids = torch.tensor([prompt_ids + comp_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]
    return sampling_logprobs(logits, torch.tensor(comp_ids), params.temperature, params.top_k, params.top_p)


def test_same_seed_same_samples_and_n_per_prompt(engine):
    params = SamplingParams(n=4, max_new_tokens=24, seed=123)
    a = engine.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    assert [len(g) for g in a] == [4, 4, 4]
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    assert [[c.prompt_index for c in g] for g in a] == [[0] * 4, [1] * 4, [2] * 4]
    # the n samples of one prompt differ from each other, and another seed gives other samples
    assert len({tuple(c.token_ids) for c in a[0]}) > 1
    c = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=24, seed=124))
    assert [[x.token_ids for x in g] for g in a] != [[x.token_ids for x in g] for g in c]


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 20, 0.9), (1.3, 0, 0.5), (0.0, 0, 1.0)])
def test_logprobs_match_a_fresh_forward(engine, model_and_tok, temperature, top_k, top_p):
    model, tok = model_and_tok
    params = SamplingParams(n=3, max_new_tokens=20, temperature=temperature, top_k=top_k, top_p=top_p, seed=7)
    out = engine.generate(PROMPTS, params)  # prompts of different lengths: left padding is exercised
    for prompt, group in zip(PROMPTS, out):
        prompt_ids = encode_prompt(tok, prompt)
        for comp in group:
            ref = fresh_logprobs(model, prompt_ids, comp.token_ids, params)
            assert torch.allclose(torch.tensor(comp.logprobs), ref, atol=1e-4), (comp.logprobs, ref.tolist())
            if temperature == 0:
                logits = model(input_ids=torch.tensor([prompt_ids + comp.token_ids])).logits[0]
                greedy = logits[len(prompt_ids) - 1:-1].argmax(-1).tolist()
                assert greedy == comp.token_ids


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(process_logits(logits, 1.0, top_k=2)).tolist() == [[False, False, True, True, True]]
    probs = torch.softmax(logits, -1)[0]  # [0.636, 0.234, 0.086, ...]: top-p 0.8 keeps 2 tokens
    kept = ~torch.isinf(process_logits(logits, 1.0, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False, False]] and probs[:2].sum() >= 0.8
    # the most likely token always survives, even for a tiny top_p
    assert (~torch.isinf(process_logits(logits, 1.0, top_p=1e-6))).sum() == 1
    # temperature divides the logits before the filters
    assert torch.allclose(process_logits(logits, 2.0), logits / 2)


def test_greedy_matches_transformers_generate(engine, model_and_tok):
    model, tok = model_and_tok
    ids = [encode_prompt(tok, p) for p in PROMPTS]
    out = engine.generate(ids, SamplingParams(temperature=0, max_new_tokens=16))
    for p, group in zip(ids, out):
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=16)[0, len(p):].tolist()
        assert group[0].token_ids == ref[:len(group[0].token_ids)]


def test_stop_strings_cut_text_and_ids_consistently(engine, model_and_tok):
    _, tok = model_and_tok
    base = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=40, seed=3))
    # pick a short printable piece from the middle of one completion as the stop string
    stop, source = None, None
    for gi, group in enumerate(base):
        for ci, comp in enumerate(group):
            text = comp.text
            for i in range(4, len(text) - 2):
                if text[i:i + 2].isprintable() and text[i:i + 2].isascii() and text[i:i + 2].strip():
                    stop, source = text[i:i + 2], (gi, ci)
                    break
            if stop:
                break
        if stop:
            break
    assert stop is not None, "no printable two-character piece in the sampled texts"
    cut = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=40, seed=3, stop=[stop]))
    for g_base, g_cut in zip(base, cut):
        for full, comp in zip(g_base, g_cut):
            assert full.token_ids[:len(comp.token_ids)] == comp.token_ids  # same draws, only cut
            if comp.finish_reason == "stop" and stop in tok.decode(comp.token_ids, skip_special_tokens=True):
                assert stop not in comp.text
                assert stop not in tok.decode(comp.token_ids[:-1], skip_special_tokens=True)
                assert tok.decode(comp.token_ids, skip_special_tokens=True).startswith(comp.text)
                assert len(comp.logprobs) == len(comp.token_ids)
    hit, full = cut[source[0]][source[1]], base[source[0]][source[1]]
    assert hit.finish_reason == "stop" and hit.text == full.text[:full.text.find(stop)]
    assert len(hit.token_ids) < len(full.token_ids)


def test_eos_ends_a_completion_and_is_kept_in_the_ids(engine, model_and_tok):
    _, tok = model_and_tok
    out = engine.generate([[1, 2, 3], [40, 41]], SamplingParams(n=32, max_new_tokens=12, seed=0))
    eos = tok.eos_token_id
    stopped = 0
    for comp in (c for g in out for c in g):
        assert eos not in comp.token_ids[:-1]
        if comp.finish_reason == "stop":
            stopped += 1
            assert comp.token_ids[-1] == eos and "<|im_end|>" not in comp.text
        else:
            assert len(comp.token_ids) == 12
    assert stopped > 0, "expected some of 64 random 12-token samples over a 259-token vocabulary to hit eos"
    forced = engine.generate([[1, 2, 3]], SamplingParams(n=32, max_new_tokens=12, seed=0), ignore_eos=True)
    assert all(len(c.token_ids) == 12 and c.finish_reason == "length" for c in forced[0])


def test_training_mode_restored_and_chunking_keeps_order(model_and_tok):
    model, tok = model_and_tok
    small = HFEngine(model, tok, max_batch_size=4)  # 3 prompts × 2 samples → 3 chunks of 2 rows... in order
    model.train()
    try:
        out = small.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=1))
        assert model.training
    finally:
        model.eval()
    assert [[c.prompt_index for c in g] for g in out] == [[0, 0], [1, 1], [2, 2]]
    assert small.last_stats["generated_tokens"] == sum(len(c.token_ids) for g in out for c in g)


def test_peft_model_generates_with_adapters_enabled(model_and_tok):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model, tok = model_and_tok
    base = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    eng = make_engine("hf", model=peft_model, tokenizer=tok)
    params = SamplingParams(n=2, max_new_tokens=10, seed=5)
    comp = eng.generate(PROMPTS[:1], params)[0][0]
    prompt_ids = encode_prompt(tok, PROMPTS[0])
    with_adapter = fresh_logprobs(peft_model, prompt_ids, comp.token_ids, params)
    assert torch.allclose(torch.tensor(comp.logprobs), with_adapter, atol=1e-4)
    with peft_model.disable_adapter():
        without = fresh_logprobs(peft_model, prompt_ids, comp.token_ids, params)
    assert not torch.allclose(with_adapter, without, atol=1e-3)
    eng.sync_weights(peft_model, adapter_only=True)  # shared object: a no-op that must not break anything
    assert eng.generate(PROMPTS[:1], params)[0][0].token_ids == comp.token_ids


def test_bad_inputs_raise_clear_errors(engine):
    with pytest.raises(TypeError, match="list of prompts"):
        engine.generate("hello", SamplingParams())
    with pytest.raises(TypeError, match="token ids"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("nope")


def test_a_failed_cuda_graph_capture_is_an_error_when_strict_and_a_counted_warning_otherwise(
        model_and_tok, caplog):
    """The failure path itself, on CPU: forcing graph capture on a CPU model makes the capture fail
    for real (no CUDA stream). Strict: the call raises and names the cause. Lenient: one logged
    warning with the reason, the failure counted in the metrics, and the samples of an eager engine
    (log-probs to float rounding: the failed call padded its prompts to the graph's length bucket)."""
    from rlenv.engines.hf import CudaGraphCaptureError

    model, tok = model_and_tok
    params = SamplingParams(n=2, max_new_tokens=10, seed=9)
    strict = HFEngine(model, tok, strict_cuda_graph=True)
    strict.use_cuda_graph = True
    with pytest.raises(CudaGraphCaptureError, match="capturing the decode step .* failed"):
        strict.generate(PROMPTS, params)
    assert strict.graph_capture_failures == 1 and strict.graph_failure_reason

    lenient = HFEngine(model, tok, strict_cuda_graph=False)
    lenient.use_cuda_graph = True
    with caplog.at_level("WARNING", logger="rlenv.engines.hf"):
        out = lenient.generate(PROMPTS, params)
    warned = [r for r in caplog.records if "CUDA graph capture" in r.getMessage()]
    assert len(warned) == 1 and lenient.graph_failure_reason in warned[0].getMessage()
    assert lenient.metrics() == {"engine/cuda_graph_capture_failures": 1.0, "engine/cuda_graph": 0.0}
    eager = HFEngine(model, tok, use_cuda_graph=False).generate(PROMPTS, params)
    assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in eager]
    for ga, gb in zip(out, eager):
        for ca, cb in zip(ga, gb):
            assert torch.allclose(torch.tensor(ca.logprobs), torch.tensor(cb.logprobs), atol=1e-5)
    lenient.generate(PROMPTS, params)  # eager from now on: no second attempt, no second count
    assert lenient.graph_capture_failures == 1


def test_decoding_under_mixed_precision_autocast(model_and_tok):
    """The trainer's mixed precision wraps the shared model's forward in bf16 autocast (float32
    weights; a decode step's values come out in bf16, its keys in float32): the decode cache takes
    both, and the log-probs are those of an autocast forward of the sampled sequence."""
    model, tok = model_and_tok
    engine = HFEngine(model, tok, share_prefix=False)
    params = SamplingParams(n=2, max_new_tokens=12, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = engine.generate(PROMPTS, params)
        for prompt, group in zip(PROMPTS, out):
            prompt_ids = encode_prompt(tok, prompt)
            for comp in group:
                ref = fresh_logprobs(model, prompt_ids, comp.token_ids, params)
                assert torch.allclose(torch.tensor(comp.logprobs), ref.float(), atol=0.05)


def test_strict_mode_follows_the_environment_variable(model_and_tok, monkeypatch):
    model, tok = model_and_tok
    monkeypatch.setenv("RLENV_STRICT_CUDA_GRAPH", "1")
    assert HFEngine(model, tok).strict_cuda_graph
    monkeypatch.setenv("RLENV_STRICT_CUDA_GRAPH", "0")
    assert not HFEngine(model, tok).strict_cuda_graph
    assert HFEngine(model, tok, strict_cuda_graph=True).strict_cuda_graph


@pytest.mark.slow
@pytest.mark.parametrize("share_prefix", [False, True])
def test_decode_step_traces_as_one_graph(tiny_model_dir, share_prefix, attn="sdpa"):
    """The CPU proxy for CUDA-graph capture: dynamo traces the whole decode step (forward, mask,
    sampling, bookkeeping) with ``fullgraph=True`` — no host sync, no data-dependent Python branch.
    (The seeded generator object is left out: dynamo cannot trace it, CUDA graphs register it.)"""
    import contextlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlenv.engines.prefix_attention import decoding_with_shared_prefix

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn)
    eng = HFEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir), share_prefix=share_prefix)
    params = SamplingParams(n=2, max_new_tokens=8, seed=0, top_k=5, top_p=0.9)
    eng.generate([[1, 2, 3]], params)
    st = next(iter(eng._states.values()))
    assert (st.prefix is not None) == share_prefix
    start = 1 if share_prefix else 4  # without sharing the own tokens follow the prompt in one cache
    with torch.inference_mode(), (decoding_with_shared_prefix(model.config) if share_prefix
                                  else contextlib.nullcontext()):
        st.generator = None
        st.step_idx.fill_(1)
        st.write_pos.fill_(start)
        for layer in st.cache.layers:
            layer.cumulative_length.fill_(start)
        torch.compile(eng._step, backend="eager", fullgraph=True)(st, params, False)
        assert int(st.step_idx) == 2 and int(st.write_pos) == start + 1 and st.kv_valid[:, start].all()
    assert model.config._attn_implementation == attn


def test_shared_prefix_decoding_equals_the_full_cache(tiny_model_dir):
    """Shared-prefix decoding (prompt cache once per prompt) gives the same tokens and log-probs as
    the full per-row cache — left padding, grouped-query heads (2 kv heads for 4), and the model's own
    attention implementation restored afterwards (the trainer shares the model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = Qwen2Config.from_pretrained(tiny_model_dir, num_key_value_heads=2)
    torch.manual_seed(0)
    gqa = AutoModelForCausalLM.from_config(cfg).eval()
    mha = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    params = SamplingParams(n=5, max_new_tokens=20, temperature=1.0, seed=3)
    for model in (mha, gqa):
        impl = model.config._attn_implementation
        shared = HFEngine(model, tok, share_prefix=True)
        full = HFEngine(model, tok, share_prefix=False)
        assert shared.share_prefix and not full.share_prefix
        a, b = shared.generate(PROMPTS, params), full.generate(PROMPTS, params)
        assert next(iter(shared._states.values())).prefix is not None
        assert model.config._attn_implementation == impl
        for ga, gb in zip(a, b):
            for ca, cb in zip(ga, gb):
                assert ca.token_ids == cb.token_ids
                assert torch.allclose(torch.tensor(ca.logprobs), torch.tensor(cb.logprobs), atol=1e-5)


def test_eager_attention_uses_an_additive_mask_and_agrees_with_sdpa(tiny_model_dir, engine):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")
    eager = HFEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert eager._mask_kind == "float" and engine._mask_kind == "bool"
    params = SamplingParams(n=2, max_new_tokens=12, seed=4)
    a, b = eager.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    for ga, gb in zip(a, b):
        for ca, cb in zip(ga, gb):
            assert ca.token_ids == cb.token_ids
            assert torch.allclose(torch.tensor(ca.logprobs), torch.tensor(cb.logprobs), atol=1e-4)


def test_shared_prefix_state_is_keyed_by_samples_per_prompt(model_and_tok):
    """Two calls with the same batch size and lengths but a different split into prompts × samples
    must not share decode buffers (the prompt cache has one slot per prompt)."""
    model, tok = model_and_tok
    full = HFEngine(model, tok, share_prefix=False)
    prompt = [[5, 6, 7, 8]]
    engine = HFEngine(model, tok, share_prefix=True)
    for prompts, n in ((prompt * 4, 2), (prompt * 2, 4), (prompt * 4, 2)):
        params = SamplingParams(n=n, max_new_tokens=6, seed=1)
        a, b = engine.generate(prompts, params), full.generate(prompts, params)
        assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]


def test_shared_prefix_auto_needs_a_prompt_as_long_as_the_generation(model_and_tok):
    eng = HFEngine(*model_and_tok)  # share_prefix=None: automatic
    eng.generate([[5, 6, 7, 8, 9, 10]], SamplingParams(n=2, max_new_tokens=4, seed=0))
    assert next(reversed(eng._states.values())).prefix is not None
    eng.generate([[5, 6, 7]], SamplingParams(n=2, max_new_tokens=8, seed=0))
    assert next(reversed(eng._states.values())).prefix is None

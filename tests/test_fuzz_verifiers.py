"""Fuzzed verifiers: every answer parser (:mod:`rlenv.parsers`) and the math verifier, on arbitrary
unicode (lone surrogates and control characters included), huge input and deeply nested input,
never raise and return within their limits.

Limits: the parsers promise linear time, so a megabyte of junk must parse in well under the bound
used here (a hang guard, generous for a loaded CI machine — not a speed test); the math verifier
promises an answer within its per-pair ``timeout`` (a worker killed on overrun).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlenv import parsers
from verifiers.math import MathVerifier, extract_answer, is_equivalent, is_equivalent_batch, normalize

#: every parser the package offers, by name (the registry plus the ones that take options)
ALL_PARSERS = dict(parsers.PARSERS)
ALL_PARSERS.update({
    "all_boxed": parsers.parse_all_boxed,
    "tag_strict": parsers.make_tag_parser("answer", strict=True),
    "tag_think": parsers.make_tag_parser("think"),
    "code_any": lambda t: parsers.parse_code_block(t, language=None, which="first"),
    "think_answer_format": parsers.check_think_answer_format,
})

#: any code point Python strings can hold, surrogates and controls included
ANY_CHAR = st.characters(codec=None, categories=None)
#: the characters parsers look for, so random text often contains near-misses of real markup
MARKUP = st.sampled_from(["\\boxed{", "\\fbox{", "{", "}", "\\", "<answer>", "</answer>", "<think>", "</think>",
                          "####", "```", "```python\n", "\n", "$", "\\frac{", "1,234.5", "-", "−", "/", "3",
                          "é", "\u202e", "\x00", "\ud800", "🙂", "\\[", "\\]", "final answer is "])
TEXT = st.one_of(st.text(ANY_CHAR, max_size=300), st.lists(MARKUP, max_size=60).map("".join),
                 st.lists(st.one_of(MARKUP, st.text(ANY_CHAR, max_size=5)), max_size=60).map("".join))

#: big and deep inputs (each parser gets every one of them)
N = 200_000
HUGE = {
    "open_boxes": "\\boxed{" * (N // 7),
    "nested_boxes": "\\boxed{" * 20_000 + "1" + "}" * 20_000,
    "braces": "{" * N + "}" * N,
    "unclosed_braces": "{" * N,
    "backslashes": "\\" * N,
    "tags": "<answer>" * (N // 8) + "</answer>" * (N // 9),
    "fences": "```python\n" * (N // 10),
    "digits": "1," * N + "5",
    "number_soup": "-1.5/2 " * (N // 7),
    "hashes": "#### " * (N // 5) + "7",
    "nested_frac": "\\frac{" * 5000 + "1" + "}{2}" * 5000,
    "parens": "(" * 50_000 + "x" + ")" * 50_000,
    "surrogates": "\ud800\udfff" * (N // 2),
    "mixed_unicode": "٣٤٥ 𝟙𝟚𝟛 ½ ⅓ \u0000\u202e " * (N // 20),
}
#: a hang guard per call: linear parsers take milliseconds on these; a backtracking regex would not
PARSE_BOUND_S = 10.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_parsers_never_raise_on_any_text(text):
    for name, parse in ALL_PARSERS.items():
        out = parse(text)
        if name == "all_boxed":
            assert isinstance(out, list) and all(isinstance(x, str) for x in out)
        elif name == "think_answer_format":
            assert out in (True, False)
        else:
            assert out is None or isinstance(out, str), (name, out)


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_parsers_on_huge_and_deep_input(kind):
    text = HUGE[kind]
    for name, parse in ALL_PARSERS.items():
        if name == "all_boxed" and kind == "nested_boxes":
            continue  # returns every nested box: its output is quadratic by definition (documented)
        t0 = time.monotonic()
        parse(text)
        assert time.monotonic() - t0 < PARSE_BOUND_S, f"{name} on {kind!r} took too long"


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_math_extract_and_normalize_on_huge_and_deep_input(kind):
    t0 = time.monotonic()
    ans = extract_answer(HUGE[kind])
    if ans is not None:
        normalize(ans[:10_000])
    assert time.monotonic() - t0 < PARSE_BOUND_S, kind


#: the math verifier's per-pair limit in these tests, and the slack a loaded machine may add
#: (worker start-up, scheduling) — the bound checks "returns", not "is fast"
MATH_TIMEOUT_S = 1.0
MATH_SLACK_S = 30.0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, TEXT)
def test_math_verifier_never_raises_on_any_text(gold, pred):
    t0 = time.monotonic()
    assert is_equivalent(gold, pred, timeout=MATH_TIMEOUT_S) in (True, False)
    assert time.monotonic() - t0 < MATH_TIMEOUT_S + MATH_SLACK_S


def test_math_verifier_on_huge_deep_and_hostile_pairs():
    hostile = ["9**9**9**9", "10^{10^{10^{10}}}", "\\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}",
               "\\boxed{" + "x^{" * 500 + "2" + "}" * 500 + "}", "\\boxed{\\int_0^\\infty e^{-x^{x^x}} dx}",
               "\\boxed{" + "+".join(f"x_{i}" for i in range(1500)) + "}", "\\boxed{\\ud800}", "\\boxed{}"]
    golds = ["1", "(1, 2)"]
    pairs = [(g, h) for g in golds for h in hostile + list(HUGE.values())]
    pairs += [(h, g) for g in golds[:1] for h in hostile + list(HUGE.values())]
    t0 = time.monotonic()
    out = is_equivalent_batch(pairs, timeout=MATH_TIMEOUT_S, workers=2)
    assert all(r in (True, False) for r in out) and len(out) == len(pairs)
    # at most a timeout per pair, pairs on 2 workers, plus start-up: the batch returns
    assert time.monotonic() - t0 < len(pairs) * MATH_TIMEOUT_S / 2 + MATH_SLACK_S


def test_math_verifier_scores_odd_completions_without_raising():
    class Task:
        answer = "2"

    odd = [None, 2, b"\\boxed{2}", ["\\boxed{2}"], {"content": "\\boxed{2}"}, [{"role": "assistant", "content": "2"}],
           "\\boxed{2}", HUGE["nested_boxes"]]
    results = MathVerifier(timeout=MATH_TIMEOUT_S).score_batch(odd, [Task()] * len(odd))
    assert len(results) == len(odd)
    assert all(0.0 <= r.reward <= 1.0 for r in results)
    assert results[odd.index("\\boxed{2}")].reward == 1.0

"""Format and string verifiers: strict tags, think/answer, exact/substring/regex, numbers, length."""

from __future__ import annotations

import pytest

import verifiers
from rlenv.core import Task
from verifiers.format import (ExactMatch, LengthPenalty, NumericMatch, RegexMatch, SubstringMatch, TagFormat,
                              extract, parse_number, soft_overlong_penalty, think_answer_format)


@pytest.mark.parametrize("text,ok", [
    ("<think>x</think><answer>1</answer>", True),
    ("  <think>x</think>\n\n<answer>1</answer>\n", True),
    ("<think>x</answer><answer>1</think>", False),       # mismatched closing tags
    ("<think>x</think><answer>1</answer></answer>", False),  # a stray closing tag
    ("<think>x<answer>1</answer></think>", False),       # nested
    ("<answer>1</answer><think>x</think>", False),       # wrong order
    ("<think>x</think><answer>1", False),                # unclosed
    ("<think>x</think><think>y</think><answer>1</answer>", False),  # repeated
    ("preamble <think>x</think><answer>1</answer>", False),          # text outside
    ("<think>a <b>bold</b> thought</think><answer>1</answer>", True),  # other tags are content
])
def test_tag_format_is_strict(text, ok):
    r = TagFormat().score(text)
    assert r.reward == float(ok)
    assert (r.details.get("reason") is None) == ok


def test_tag_format_options():
    assert TagFormat(tags=("answer",)).score("<answer>2</answer>").reward == 1.0
    assert TagFormat(allow_text_outside=True).score("So: <think>x</think> <answer>1</answer>.").reward == 1.0
    with pytest.raises(ValueError, match="at least one tag"):
        TagFormat(tags=())


def test_think_answer_format():
    assert think_answer_format("<think>a</think><answer>b</answer>").reward == 1.0
    assert think_answer_format("<think>a</think><answer></answer>").reward == 0.0
    assert think_answer_format("<answer>b</answer>").reward == 0.0


def test_exact_and_substring_match():
    t = Task("q", "Paris")
    assert ExactMatch().score("  paris ", t).reward == 1.0
    assert ExactMatch(case_sensitive=True).score("paris", t).reward == 0.0
    assert ExactMatch(parser="boxed").score(r"It is \boxed{Paris}.", t).reward == 1.0
    r = ExactMatch(parser="boxed").score("It is Paris.", t)
    assert r.reward == 0.0 and r.details["reason"] == "no answer found"
    assert ExactMatch(parser="tag").score("<answer>New  York</answer>", Task("q", "new york")).reward == 1.0
    assert ExactMatch().score("x", Task("q")).verdict == "n/a"
    assert SubstringMatch().score("The capital is Paris, of course.", t).reward == 1.0
    assert SubstringMatch(parser="tag").score("Paris <answer>Lyon</answer>", t).reward == 0.0


def test_regex_match():
    assert RegexMatch(r"\d+", fullmatch=True).score("123").reward == 1.0
    assert RegexMatch(r"\d+", fullmatch=True).score("123a").reward == 0.0
    assert RegexMatch(r"answer is {answer}\b").score("the answer is 3.5", Task("q", "3.5")).reward == 1.0
    assert RegexMatch(r"answer is {answer}\b").score("the answer is 345", Task("q", "3.5")).reward == 0.0
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RegexMatch("(unclosed")


@pytest.mark.parametrize("s,v", [("1,234.5", 1234.5), ("-3/4", -0.75), ("12%", 12.0), ("$5", 5.0), ("1e-3", 0.001),
                                 ("42.", 42.0), ("−7", -7.0), ("abc", None), ("1/0", None), (None, None), (3, 3.0)])
def test_parse_number(s, v):
    assert parse_number(s) == v


def test_numeric_match_tolerance():
    t = Task("q", "1234")
    assert NumericMatch().score("so the total is 1,234.0 dollars", t).reward == 1.0
    assert NumericMatch().score("so the total is 1,235", t).reward == 0.0
    assert NumericMatch(rel_tol=1e-3).score("1235", t).reward == 1.0
    assert NumericMatch(parser="gsm8k").score("steps 99\n#### 1234", t).reward == 1.0
    assert NumericMatch().score("no digits", t).details["reason"] == "no number found"
    assert NumericMatch().score("5", Task("q", "five")).verdict == "n/a"
    assert NumericMatch().score("0.3333333", Task("q", "1/3")).reward == 1.0
    with pytest.raises(ValueError, match="tolerances"):
        NumericMatch(rel_tol=-1)


def test_soft_overlong_penalty_by_hand():
    # max 100, buffer 20: free up to 80, then linear to -1 at 100, -1 beyond
    assert soft_overlong_penalty(80, 100, 20) == 0.0
    assert soft_overlong_penalty(90, 100, 20) == -0.5
    assert soft_overlong_penalty(100, 100, 20) == -1.0
    assert soft_overlong_penalty(101, 100, 20) == -1.0
    assert soft_overlong_penalty(100, 100, 0) == 0.0 and soft_overlong_penalty(101, 100, 0) == -1.0
    lp = LengthPenalty(100, buffer=20)
    r = lp.score("x" * 95)
    assert r.reward == pytest.approx(-0.75) and r.details == {"length": 95}


def test_length_penalty_in_tokens():
    from rlenv.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()  # one token per byte
    lp = LengthPenalty(10, buffer=4, tokenizer=tok)
    assert lp.length("héllo") == 6  # é is two bytes
    assert lp.score("abcdefgh").reward == pytest.approx(-0.5)


def test_extract_delegates_to_rlenv_parsers():
    assert extract(r"\boxed{3}", "boxed") == "3"
    assert extract(" raw ", None) == "raw"
    assert extract("a 1 b 2", lambda s: s.split()[-1]) == "2"
    with pytest.raises(ValueError, match="unknown parser"):
        extract("x", "nope")


@pytest.mark.timeout(60)  # a catastrophic backtrack would hang here
def test_registered_by_name_and_linear_on_junk():
    names = set(verifiers.list_verifiers())
    assert {"think_answer_format", "tag_format", "exact_match", "substring_match", "regex", "numeric_match",
            "length_penalty"} <= names
    junk = "<think>" * 20_000 + "1," * 30_000
    assert TagFormat().score(junk).reward == 0.0
    assert NumericMatch().score(junk, Task("q", "1")).reward == 1.0  # the last number is 1
    assert ExactMatch(parser="tag").score(junk, Task("q", "1")).details["reason"] == "no answer found"

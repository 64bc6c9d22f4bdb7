"""Answer parsers on real-looking model outputs, including adversarial junk (must stay linear-time)."""

import time

import pytest

from rlenv.parsers import (check_think_answer_format, get_parser, make_tag_parser, parse_all_boxed,
                           parse_boxed, parse_code_block, parse_gsm8k, parse_last_number, parse_tag)

MATH_OUTPUT = r"""We have $x^2 = \frac{1}{4}$, so $x = \pm\frac{1}{2}$. First, \boxed{\frac{1}{2}} is one root.
Taking both roots into account, the set of solutions is \boxed{\left\{ -\frac{1}{2}, \frac{1}{2} \right\}}."""


def test_boxed_nested_and_last():
    assert parse_boxed(MATH_OUTPUT) == r"\left\{ -\frac{1}{2}, \frac{1}{2} \right\}"
    assert parse_all_boxed(MATH_OUTPUT)[0] == r"\frac{1}{2}"
    assert parse_boxed(r"\boxed{\sqrt{\frac{a}{b^{2}}}}") == r"\sqrt{\frac{a}{b^{2}}}"


def test_boxed_variants_and_no_match():
    assert parse_boxed(r"The answer is $\fbox{7}$.") == "7"
    assert parse_boxed(r"so \boxed 5$ done") == "5"
    assert parse_boxed(r"\boxed{3} then \fbox{4}") == "4"  # order of appearance, not marker kind
    assert parse_boxed("I am not sure what the answer is.") is None
    assert parse_boxed(r"truncated \boxed{\frac{1}{2") is None
    assert parse_boxed("") is None
    assert parse_boxed(r"\boxed{ 42 }") == "42"


def test_boxed_unicode():
    assert parse_boxed(r"Réponse : \boxed{π/2 ≈ 1.5708} ✓") == "π/2 ≈ 1.5708"


def test_tag_parser():
    out = "<think>Maybe <answer>5</answer>? No.</think>\n<answer>\n  6\n</answer>"
    assert parse_tag(out) == "6"
    assert parse_tag(out, strict=True) == "6"
    assert parse_tag("<answer>7</answer> and then some chatter", strict=True) is None
    assert parse_tag("<answer>7</answer> and then some chatter") == "7"
    assert parse_tag("no tags here") is None
    assert parse_tag("<answer>unclosed") is None
    assert parse_tag("</answer> only closing") is None
    assert parse_tag("<a>46</a>", tag="a") == "46"
    assert make_tag_parser("a", strict=True)(" <a>-3</a> ") == "-3"
    assert parse_tag("<answer>日本語の答え：四</answer>") == "日本語の答え：四"


def test_gsm8k():
    assert parse_gsm8k("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72") == "72"
    assert parse_gsm8k("The total is 1,234 dollars.\n#### $1,234") == "1234"
    assert parse_gsm8k("#### -3.5 apples") == "-3.5"
    assert parse_gsm8k("#### 10\nmore text\n#### 12") == "12"
    assert parse_gsm8k("The answer is 72.") is None


def test_last_number():
    assert parse_last_number("First 3 then 4, so the answer is -17.") == "-17"
    assert parse_last_number("It costs $1,234,567.89 total") == "1234567.89"
    assert parse_last_number("She ate 3/4 of the pie") == "3/4"
    assert parse_last_number("about .5 liters") == ".5"
    assert parse_last_number("the temperature fell to −4 °C") == "-4"
    assert parse_last_number("no digits at all — none") is None
    assert parse_last_number("") is None


CODE_OUTPUT = """Here's a first attempt:
```python
def f(x):
    return x
```
Wait, fix it:
```py
def f(x):
    return x + 1
```
And a shell line:
```bash
python f.py
```
"""


def test_code_block():
    assert parse_code_block(CODE_OUTPUT) == "def f(x):\n    return x + 1"
    assert parse_code_block(CODE_OUTPUT, which="first") == "def f(x):\n    return x"
    assert parse_code_block(CODE_OUTPUT, language=None) == "python f.py"
    assert parse_code_block("```python\nprint(1)\n") is None  # truncated: never closed
    assert parse_code_block("no code") is None
    assert parse_code_block("```\nx = 1\n```", language=None) == "x = 1"
    with pytest.raises(ValueError, match="which"):
        parse_code_block(CODE_OUTPUT, which="middle")


def test_think_answer_format():
    assert check_think_answer_format("<think>2+2 is 4</think>\n<answer>4</answer>")
    assert not check_think_answer_format("<answer>4</answer>")
    assert not check_think_answer_format("<think>a</think><answer>4</answer> extra")
    assert not check_think_answer_format("<think>a</think><think>b</think><answer>4</answer>")
    assert not check_think_answer_format("<think>a</think><answer>  </answer>")
    assert not check_think_answer_format("")


def test_get_parser():
    assert get_parser("boxed") is parse_boxed
    assert get_parser(len) is len
    with pytest.raises(ValueError, match="unknown parser 'boxd'"):
        get_parser("boxd")


# Inputs built to trigger catastrophic backtracking in naive regexes, ~100 KB each.
JUNK = [
    "\\boxed{" * 20_000,
    "{" * 100_000,
    "1," * 50_000,
    "1" * 100_000 + "x",
    "<answer>" * 12_000,
    "```python\n" * 10_000,
    "#### " + " " * 100_000,
    "-" * 100_000,
    "1 /" * 33_000,
    "ü€😀" * 30_000,
]


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_parsers_linear_on_junk(junk):
    parsers = [parse_boxed, parse_tag, lambda t: parse_tag(t, strict=True), parse_gsm8k,
               parse_last_number, parse_code_block, check_think_answer_format]
    start = time.perf_counter()
    for p in parsers:
        p(junk)
    # generous bound (2 shared CPU cores); a backtracking regex would take minutes, not seconds
    assert time.perf_counter() - start < 5.0


def test_parsers_find_answer_after_junk():
    junk = "lorem ipsum 12 {[(" * 6_000  # ~100 KB
    assert parse_boxed(junk + r"\boxed{9}") == "9"
    assert parse_tag(junk + "<answer>9</answer>") == "9"
    assert parse_last_number(junk + " 9") == "9"
    assert parse_gsm8k(junk + "#### 9") == "9"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("\\boxed{}fbx<>/answer#1234567890,.-− `python\nthink")), max_size=200))
def test_parsers_never_raise(text):
    for p in (parse_boxed, parse_tag, parse_gsm8k, parse_last_number, parse_code_block):
        out = p(text)
        assert out is None or isinstance(out, str)
    assert isinstance(check_think_answer_format(text), bool)

"""The complete labelled test suites of public math graders, run through ``is_equivalent``.

The suites live in ``tests/data/math_suites/`` (every case, unedited; README.md there gives each
file's source, commit and licence). ``tests/math_suites.py`` maps each case's grader options to
ours. A label we dispute stays in its file and is listed, with the reason, in ``disputed.json``
(and docs/math.md); every disagreement must be one of those.
"""

import json
import os

import pytest

import math_suites
from verifiers.math import is_equivalent, is_equivalent_batch

FLOOR = {"math-verify": 0.98, "hendrycks-math": 0.85, "nemo-skills": 0.98}  # done-when ≥ 98 % on math-verify's
DISPUTED = {(d["suite"], d["case"]): d for d in json.load(open(os.path.join(math_suites.DATA, "disputed.json")))}


def _batch(pairs, **options):
    return is_equivalent_batch(pairs, workers=2, **options)


@pytest.mark.parametrize("suite", sorted(math_suites.SUITES))
def test_outside_suite_agreement(suite, record_property):
    checks, verdicts = math_suites.run(_batch, suite)
    wrong = [(c.case_id, c.expected) for c, v in zip(checks, verdicts) if v != c.expected]
    agreement = 1 - len(wrong) / len(checks)
    print(f"\n{suite}: {len(checks) - len(wrong)}/{len(checks)} agree ({agreement:.1%})")
    record_property(f"agreement_{suite}", round(agreement, 4))
    undisputed = [w for w in wrong if (suite, w[0]) not in DISPUTED]
    assert undisputed == [], "disagreements not listed in tests/data/math_suites/disputed.json"
    assert agreement >= FLOOR[suite]
    for key, d in DISPUTED.items():  # each dispute says what the label and we say
        if key[0] == suite:
            assert (key[1], d["label"]) in wrong and d["ours"] != d["label"], key


def test_suites_are_complete_and_unedited():
    counts = {s: len(math_suites.load(s)) for s in math_suites.SUITES}
    # math-verify 0.9.0's tests/: 276 labelled gold/pred pairs; hendrycks/math: 16; NeMo-Skills: 30 pairs
    assert counts == {"math-verify": 276, "hendrycks-math": 16, "nemo-skills": 30}
    rows = math_suites.load("math-verify")
    assert {r["expected"] for r in rows} == {0, 1}
    assert sum(r["precision"] != 6 for r in rows) == 6 and sum(not r["strict"] for r in rows) == 1


def test_math_verify_choice_extraction_cases():
    """math-verify's StringExtractionConfig cases (text → the letter it picks): the picked letter is
    equivalent to the text and no other letter is; a text that picks none matches no letter."""
    with open(os.path.join(math_suites.DATA, "math_verify_string_extraction.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 7
    for r in rows:
        picked = r["expected"][-1] if r["expected"] else None
        for letter in "ABCDU":
            assert is_equivalent(letter, r["pred"]) is (letter == picked), (letter, r["pred"])

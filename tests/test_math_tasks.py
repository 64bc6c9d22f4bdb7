"""gsm8k-v0 and math-v0 score answers the way users' completions state them, and not junk around them.

Every check goes through ``rlenv.make(...)`` → ``reset`` → ``step``, the path a trainer takes.
"""

import pytest

import rlenv


def _reward(env, index: int, completion: str) -> float:
    env.reset(options={"task_index": index})
    return env.step(completion)[1]


def _index_with_integer_answer(env) -> tuple[int, str]:
    for i in range(len(env.source)):
        _, info = env.reset(options={"task_index": i})
        if info["task"].answer.isdigit() and int(info["task"].answer) > 9:
            return i, info["task"].answer
    raise AssertionError("the bundled sample has no integer answer above 9")


@pytest.fixture(scope="module", params=["gsm8k-v0", "math-v0"])
def env_and_gold(request):
    env = rlenv.make(request.param)
    i, gold = _index_with_integer_answer(env)
    return env, i, gold


@pytest.mark.parametrize("template", [
    "Answer: {g}", "Total: {g}", "Therefore {g}.", "The answer is {g}", "I get {g}.", "so the result is ${g}$.",
    "**Answer:** {g}", "Adding the parts gives the total.\nTotal: {g}", "Final answer: {g} in all",
    "#### {g}", "\\boxed{{{g}}}", "<answer>{g}</answer>",
])
def test_an_answer_stated_any_usual_way_scores(env_and_gold, template):
    env, i, gold = env_and_gold
    assert _reward(env, i, template.format(g=gold)) == 1.0


@pytest.mark.parametrize("template", [
    "Answer: {w}", "Total: {w}", "Therefore {w}.", "The answer is {w}", "#### {w}", "\\boxed{{{w}}}",
    # right answer, then a different one: the last statement decides
    "The answer is {g}. No wait, it's {w}.", "Answer: {g}\nAnswer: {w}",
    "\\boxed{{{g}}} is what I first thought, but \\boxed{{{w}}}",
    "#### {g}\n#### {w}",
    # answer spam: several candidates are no answer
    "{w}, {g}, {w2}", "\\boxed{{{w}}} \\boxed{{{g}}} \\boxed{{{w2}}}", "The answer is {w} or {g}", "Total: {g} or {w}",
    " ".join(str(k) for k in range(200)) + " {w}",
])
def test_wrong_contradicted_or_spammed_answers_score_zero(env_and_gold, template):
    env, i, gold = env_and_gold
    w, w2 = str(int(gold) + 1), str(int(gold) + 2)
    assert _reward(env, i, template.format(g=gold, w=w, w2=w2)) == 0.0


@pytest.mark.parametrize("env_id", ["gsm8k-v0", "math-v0"])
def test_echoing_the_prompt_scores_zero(env_id):
    env = rlenv.make(env_id)
    for i in range(len(env.source)):
        obs, _ = env.reset(options={"task_index": i})
        echo = "\n".join(m["content"] for m in obs)
        assert env.step(echo)[1] == 0.0, obs[-1]["content"][:80]


@pytest.mark.parametrize("prompt,gold,restated", [
    ("Simplify $\\sqrt{8}$.", "2\\sqrt{2}", "\\boxed{\\sqrt 8}"),
    ("What is $2+3$?", "5", "The answer is $2+3$."),
    ("Compute $\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix}$.",
     "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}",
     "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix}}"),
])
def test_an_expression_copied_from_the_question_is_not_an_answer(prompt, gold, restated):
    """sympy finds the question's own expression equal to its value; rewarding that teaches echoing
    (``rlenv audit math-v0`` flagged it). The gold answer as written, and plain numbers, still pass."""
    from verifiers.math import MathVerifier

    task = rlenv.Task(prompt=prompt, answer=gold)
    verifier = MathVerifier()
    assert verifier.score(restated, task).reward == 0.0
    assert verifier.score(f"\\boxed{{{gold}}}", task).reward == 1.0
    assert MathVerifier(reject_restated=False).score(restated, task).reward == 1.0
    larger = rlenv.Task(prompt="Which is larger, $\\frac{3}{4}$ or $\\frac{2}{3}$?", answer="\\frac34")
    assert verifier.score("\\boxed{\\frac{3}{4}}", larger).reward == 1.0

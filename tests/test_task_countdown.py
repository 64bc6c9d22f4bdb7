import random

import pytest

import rlenv
from tasks import countdown


def test_generated_targets_are_reachable_and_reference_solution_scores():
    rng = random.Random(0)
    for _ in range(300):
        task = countdown.generate(rng, num_numbers=4)
        assert countdown.correct(task.info["target"], task).reward == 1.0


@pytest.mark.parametrize("expr,value", [("(50 - 25) * 3 + 7", 82), ("7 / 2 * 2", 7), ("((1))", 1)])
def test_expression_values_are_exact(expr, value):
    assert countdown.evaluate_expression(expr)[0] == value


@pytest.mark.parametrize("expr", ["__import__('os').system('x')", "9**9**9**9", "1.5 + 2", "-3 + 4", "a + 1",
                                  "1 / 0", "(" * 400 + "1" + ")" * 400, "[1, 2]", "1; 2", ""])
def test_hostile_or_invalid_expressions_are_rejected_without_eval(expr):
    with pytest.raises(countdown.ExpressionError):
        countdown.evaluate_expression(expr)


def test_each_number_exactly_once():
    task = rlenv.Task("Using the numbers [3, 7, 25, 50], make 82.", "82", {"numbers": [3, 7, 25, 50]})
    assert countdown.correct("<a>(50 - 25) * 3 + 7</a>", task).reward == 1.0
    assert countdown.correct("<a>50 + 25 + 7</a>", task).reward == 0.0  # 3 unused
    assert countdown.correct("<a>50 + 25 + 7 + 3 - 3</a>", task).reward == 0.0  # 3 used twice
    assert countdown.correct("no tags, 82", task).reward == 0.0


def test_env_through_registry_and_checker():
    env = rlenv.make("countdown-v0", difficulty=0)
    rlenv.check_env(env)
    obs, info = env.reset(seed=3)
    _, reward, terminated, truncated, step_info = env.step(info["task"].info["target"])
    assert reward == 1.0 and terminated and not truncated
    assert set(step_info["scores"]) == {"correct", "format"}
    with pytest.raises(ValueError, match="difficulty"):
        rlenv.make("countdown-v0", difficulty=9)

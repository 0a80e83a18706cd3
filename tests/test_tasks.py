"""Tests for stasc.core.tasks: each task's prompts, extraction and reward, and the one entry the loop scores by."""

from __future__ import annotations

import pytest

from stasc.config import DEFAULT_INSTRUCTIONS, DEFAULT_MATH_INSTRUCTIONS, StascConfig
from stasc.core.rewards import binary_reward
from stasc.core.tasks import TASK_NAMES, get_task, task_accuracy, task_reward
from stasc.errors import StascError


def test_registry_has_qa_and_math_with_their_prompts() -> None:
    assert TASK_NAMES == ("qa", "math")
    assert get_task("qa").instructions == DEFAULT_INSTRUCTIONS
    math = get_task("math")
    assert math.instructions == DEFAULT_MATH_INSTRUCTIONS and "\\boxed{}" in math.correction_instructions


def test_unknown_task_suggests_the_closest() -> None:
    with pytest.raises(StascError, match="Unknown task 'maths'. Choose one of: qa, math. Did you mean 'math'"):
        get_task("maths")


@pytest.mark.parametrize(
    ("output", "golds", "qa", "math"),
    [
        ("So x = \\boxed{\\frac{1}{2}}", ["0.5"], 0, 1),  # equal values written differently
        ("I first guessed 5, but it is 15.\nFinal Answer: 15", ["5"], 1, 0),  # "5" occurs, the answer is 15
        ("Final Answer: 1,000", ["1000"], 0, 1),
        ("Final Answer: Paris", ["Paris"], 1, 1),
    ],
)
def test_each_task_scores_by_its_own_reward(output: str, golds: list[str], qa: int, math: int) -> None:
    qa_config, math_config = StascConfig(), StascConfig(task="math")
    assert task_reward(qa_config, output, golds) == task_accuracy(qa_config, output, golds) == qa
    assert task_reward(math_config, output, golds) == task_accuracy(math_config, output, golds) == math


def test_qa_reward_follows_reward_and_extraction_settings() -> None:
    config = StascConfig(reward="em", answer_extraction="final_answer")
    output = "Rome is wrong.\nFinal Answer: Paris"
    assert task_reward(config, output, ["Paris"]) == binary_reward(
        output, ["Paris"], reward="em", extraction="final_answer"
    ) == 1
    assert task_reward(config, "Final Answer: Paris, France", ["Paris"]) == 0  # exact match
    assert task_accuracy(config, "Final Answer: Paris, France", ["Paris"]) == 1  # evaluation stays in-accuracy


def test_extraction_of_each_task() -> None:
    output = "It is \\boxed{12}.\nFinal Answer: twelve"
    assert get_task("math").extract(output, StascConfig(task="math")) == "12"
    assert get_task("qa").extract(output, StascConfig(answer_extraction="final_answer")) == "twelve"

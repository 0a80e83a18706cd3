"""Tasks: what kind of questions a run answers, how it asks for answers and how it scores them.

A task bundles its default instructions, its answer extraction, the 0/1 reward that filters corrections
and the accuracy evaluation reports. The loop scores every output through ``task_reward`` and
``task_accuracy``, so adding a task needs no change there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stasc.config import TASK_INSTRUCTIONS, StascConfig
from stasc.core.math_answers import extract_math_answer, math_reward
from stasc.core.rewards import binary_reward, extract_answer, score_output
from stasc.errors import check_choice

Scorer = Callable[[str, Sequence[str], StascConfig], int]


@dataclass(frozen=True)
class Task:
    """One task: its prompts, where an output's answer is, its reward and its evaluation accuracy."""

    name: str
    instructions: str
    correction_instructions: str
    extract: Callable[[str, StascConfig], str | None]
    reward: Scorer
    accuracy: Scorer


def _qa_reward(output: str, golds: Sequence[str], config: StascConfig) -> int:
    return binary_reward(
        output, list(golds), reward=config.reward, extraction=config.answer_extraction,  # type: ignore[arg-type]
        f1_threshold=config.f1_threshold,
    )


def _qa_accuracy(output: str, golds: Sequence[str], config: StascConfig) -> int:
    extraction = config.answer_extraction
    return int(score_output(output, list(golds), metric="in_acc", extraction=extraction))  # type: ignore[arg-type]


def _math_reward(output: str, golds: Sequence[str], config: StascConfig) -> int:
    return math_reward(output, golds)


TASKS: dict[str, Task] = {
    "qa": Task(
        "qa", *TASK_INSTRUCTIONS["qa"],
        extract=lambda output, config: extract_answer(output, config.answer_extraction),  # type: ignore[arg-type]
        reward=_qa_reward, accuracy=_qa_accuracy,
    ),
    "math": Task(
        "math", *TASK_INSTRUCTIONS["math"],
        extract=lambda output, config: extract_math_answer(output), reward=_math_reward, accuracy=_math_reward,
    ),
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    """The registered task of that name, suggesting the closest one on a typo."""
    return TASKS[check_choice(name, TASK_NAMES, "task")]


def task_reward(config: StascConfig, output: str, golds: Sequence[str]) -> int:
    """The 0/1 reward of an output under the run's task: what the filter keeps corrections by."""
    return get_task(config.task).reward(output, golds, config)


def task_accuracy(config: StascConfig, output: str, golds: Sequence[str]) -> int:
    """Whether an output is right by the run's task's evaluation accuracy (QA: in-accuracy; math: the reward)."""
    return get_task(config.task).accuracy(output, golds, config)

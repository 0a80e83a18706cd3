"""Which (initial answer, correction) pairs STaSC trains on, and how answers move between correct
and incorrect when the model corrects itself."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from stasc.errors import check_choice

FilterMode = Literal["improving", "non_decreasing"]
FILTER_MODES: tuple[str, ...] = ("improving", "non_decreasing")


def check_filter_mode(name: str) -> FilterMode:
    """Validate a filter mode from user input, suggesting the closest valid one on a typo."""
    return cast(FilterMode, check_choice(name, FILTER_MODES, "filter mode"))


def _check_reward(reward: int) -> None:
    """Rewards are binary; anything else means a metric score leaked in unthresholded."""
    if reward not in (0, 1):
        raise ValueError(f"rewards must be 0 or 1, got {reward!r}")


def keep_correction(initial_reward: int, correction_reward: int, mode: FilterMode) -> bool:
    """Decide whether a correction becomes training data: it must end correct, and under
    "improving" it must also have fixed a wrong initial answer."""
    _check_reward(initial_reward)
    _check_reward(correction_reward)
    if check_filter_mode(mode) == "improving":
        return initial_reward == 0 and correction_reward == 1
    return correction_reward == 1


@dataclass(frozen=True)
class Transitions:
    """Counts of how answers changed between the initial attempt and the correction."""

    correct_to_correct: int = 0
    correct_to_incorrect: int = 0
    incorrect_to_correct: int = 0
    incorrect_to_incorrect: int = 0

    @property
    def total(self) -> int:
        """Number of pairs counted."""
        return (
            self.correct_to_correct
            + self.correct_to_incorrect
            + self.incorrect_to_correct
            + self.incorrect_to_incorrect
        )

    def counts(self) -> dict[str, int]:
        """The four counts by name, for logging and reports."""
        return {
            "correct_to_correct": self.correct_to_correct,
            "correct_to_incorrect": self.correct_to_incorrect,
            "incorrect_to_correct": self.incorrect_to_correct,
            "incorrect_to_incorrect": self.incorrect_to_incorrect,
        }

    def rates(self) -> dict[str, float]:
        """Each count as a share of the total; all 0.0 when nothing was counted."""
        total = self.total
        return {name: (count / total if total else 0.0) for name, count in self.counts().items()}


def count_transitions(pairs: Iterable[tuple[int, int]]) -> Transitions:
    """Tally (initial_reward, correction_reward) pairs into the four transitions."""
    tally = {(1, 1): 0, (1, 0): 0, (0, 1): 0, (0, 0): 0}
    for initial_reward, correction_reward in pairs:
        _check_reward(initial_reward)
        _check_reward(correction_reward)
        tally[(int(initial_reward), int(correction_reward))] += 1
    return Transitions(
        correct_to_correct=tally[(1, 1)],
        correct_to_incorrect=tally[(1, 0)],
        incorrect_to_correct=tally[(0, 1)],
        incorrect_to_incorrect=tally[(0, 0)],
    )

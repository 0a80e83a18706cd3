from __future__ import annotations

import pytest

from stasc.errors import StascError
from stasc.core.filtering import (
    FILTER_MODES,
    Transitions,
    check_filter_mode,
    count_transitions,
    keep_correction,
)

TRANSITION_NAMES = [
    "correct_to_correct",
    "correct_to_incorrect",
    "incorrect_to_correct",
    "incorrect_to_incorrect",
]


@pytest.mark.parametrize(
    ("initial", "correction", "mode", "expected"),
    [
        (0, 0, "improving", False),
        (0, 1, "improving", True),
        (1, 0, "improving", False),
        (1, 1, "improving", False),
        (0, 0, "non_decreasing", False),
        (0, 1, "non_decreasing", True),
        (1, 0, "non_decreasing", False),
        (1, 1, "non_decreasing", True),
    ],
)
def test_keep_correction_table(initial: int, correction: int, mode: str, expected: bool) -> None:
    assert keep_correction(initial, correction, mode) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", FILTER_MODES)
@pytest.mark.parametrize(("initial", "correction"), [(2, 1), (0, -1), (1, 0.5), (-1, 0)])
def test_keep_correction_rejects_non_binary_rewards(
    initial: int, correction: int, mode: str
) -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        keep_correction(initial, correction, mode)  # type: ignore[arg-type]


def test_keep_correction_unknown_mode_suggests_closest() -> None:
    with pytest.raises(StascError) as excinfo:
        keep_correction(0, 1, "improve")  # type: ignore[arg-type]
    assert str(excinfo.value) == (
        "Unknown filter mode 'improve'. Choose one of: improving, non_decreasing. "
        "Did you mean 'improving'?"
    )


@pytest.mark.parametrize("mode", FILTER_MODES)
def test_check_filter_mode_accepts_valid(mode: str) -> None:
    assert check_filter_mode(mode) == mode


def test_count_transitions() -> None:
    pairs = [(1, 1), (1, 1), (1, 1), (1, 0), (0, 1), (0, 1), (0, 0), (0, 0), (0, 0), (0, 0)]
    transitions = count_transitions(pairs)
    assert transitions == Transitions(
        correct_to_correct=3, correct_to_incorrect=1, incorrect_to_correct=2, incorrect_to_incorrect=4
    )
    assert transitions.total == 10
    assert transitions.counts() == {
        "correct_to_correct": 3,
        "correct_to_incorrect": 1,
        "incorrect_to_correct": 2,
        "incorrect_to_incorrect": 4,
    }
    assert transitions.rates() == pytest.approx(
        {
            "correct_to_correct": 0.3,
            "correct_to_incorrect": 0.1,
            "incorrect_to_correct": 0.2,
            "incorrect_to_incorrect": 0.4,
        }
    )


@pytest.mark.parametrize(
    "pairs",
    [
        [(0, 1)],
        [(1, 0), (1, 0), (0, 0)],
        [(1, 1), (0, 0), (0, 1), (1, 0), (0, 1), (1, 1), (1, 1)],
    ],
)
def test_transition_rates_sum_to_one(pairs: list[tuple[int, int]]) -> None:
    transitions = count_transitions(pairs)
    assert transitions.total == len(pairs)
    assert sum(transitions.counts().values()) == len(pairs)
    assert sum(transitions.rates().values()) == pytest.approx(1.0)
    assert list(transitions.rates()) == TRANSITION_NAMES
    assert list(transitions.counts()) == TRANSITION_NAMES


def test_count_transitions_accepts_a_generator() -> None:
    transitions = count_transitions((initial, 1) for initial in (0, 1, 0))
    assert transitions.incorrect_to_correct == 2
    assert transitions.correct_to_correct == 1


def test_empty_input_has_zero_counts_and_rates() -> None:
    transitions = count_transitions([])
    assert transitions == Transitions()
    assert transitions.total == 0
    assert transitions.counts() == dict.fromkeys(TRANSITION_NAMES, 0)
    assert transitions.rates() == dict.fromkeys(TRANSITION_NAMES, 0.0)


@pytest.mark.parametrize("pairs", [[(1, 2)], [(0, 1), (3, 0)], [(-1, -1)]])
def test_count_transitions_rejects_non_binary_rewards(pairs: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        count_transitions(pairs)


def test_transitions_are_immutable() -> None:
    transitions = Transitions(correct_to_correct=1)
    with pytest.raises(AttributeError):
        transitions.correct_to_correct = 2  # type: ignore[misc]

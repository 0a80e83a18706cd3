from __future__ import annotations

import pytest

from stasc.errors import StascError
from stasc.core.filtering import (
    FILTER_MODES,
    Transitions,
    check_filter_mode,
    count_transitions,
    keep_correction,
    kept_pairs,
    own_answer_fixes,
    spread_over_groups,
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
        (0, 0, "non_decreasing_authors", False),
        (0, 1, "non_decreasing_authors", False),
        (1, 0, "non_decreasing_authors", False),
        (1, 1, "non_decreasing_authors", True),
        (0, 0, "balanced", False),
        (0, 1, "balanced", True),
        (1, 0, "balanced", False),
        (1, 1, "balanced", True),
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
        "Unknown filter mode 'improve'. Choose one of: improving, non_decreasing, non_decreasing_authors, balanced. "
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


PAIRS = [(0, 1), (1, 1), (0, 0), (1, 0), (0, 1), (1, 1)]
QUESTIONS = ["a", "a", "b", "b", "c", "c"]


def decisions(mode: str, pairs=PAIRS, questions=QUESTIONS, **settings) -> list[int]:
    initial, correction = zip(*pairs) if pairs else ((), ())
    kept = kept_pairs(list(initial), list(correction), list(questions), mode, **settings)  # type: ignore[arg-type]
    return [index for index, keep in enumerate(kept) if keep]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("improving", [0, 4]), ("non_decreasing", [0, 1, 4, 5]), ("non_decreasing_authors", [1, 5])],
)
def test_per_pair_filters_keep_in_order(mode: str, expected: list[int]) -> None:
    assert decisions(mode) == expected


@pytest.mark.parametrize("mode", FILTER_MODES)
def test_no_pairs_keep_nothing(mode: str) -> None:
    assert decisions(mode, pairs=[], questions=[]) == []


def test_balanced_keeps_every_fix_and_at_most_ratio_stays_right_per_fix() -> None:
    pairs = [(0, 1)] * 3 + [(1, 1)] * 20 + [(0, 0), (1, 0)]
    questions = [f"q{index % 7}" for index in range(len(pairs))]
    for ratio, stays_right in ((0, 0), (1, 3), (2, 6), (2.5, 7), (10, 20)):
        kept = decisions("balanced", pairs, questions, keep_ratio=ratio)
        assert kept[:3] == [0, 1, 2], "every wrong-to-right pair is kept"
        assert len(kept) - 3 == stays_right
        assert all(pairs[index] == (1, 1) for index in kept[3:])


def test_balanced_counts_fixes_from_elsewhere_and_keeps_nothing_without_fixes() -> None:
    pairs = [(1, 1)] * 10
    questions = list("abcdeabcde")
    assert decisions("balanced", pairs, questions, keep_ratio=1) == []
    assert len(decisions("balanced", pairs, questions, keep_ratio=1, extra_fixes=4)) == 4


def test_balanced_spreads_stays_right_over_questions_and_follows_the_seed() -> None:
    pairs = [(0, 1)] * 3 + [(1, 1)] * 12
    questions = ["x"] * 3 + ["a"] * 6 + ["b"] * 3 + ["c"] * 3
    kept = decisions("balanced", pairs, questions, keep_ratio=1, seed=0)
    assert sorted(questions[index] for index in kept[3:]) == ["a", "b", "c"], "one per question before a second"
    choices = {tuple(decisions("balanced", pairs, questions, keep_ratio=1, seed=seed)) for seed in range(8)}
    assert len(choices) > 1, "the seed picks which pairs"
    assert decisions("balanced", pairs, questions, keep_ratio=1, seed=3) == decisions(
        "balanced", pairs, questions, keep_ratio=1, seed=3)


def test_spread_over_groups_takes_one_per_group_per_round() -> None:
    order = spread_over_groups([1, 2, 3, 4, 5, 6], ["a", "a", "a", "b", "c", "c"], seed=1)
    assert sorted(order) == [1, 2, 3, 4, 5, 6]
    first_round = order[:3]
    assert {("a" if item <= 3 else "b" if item == 4 else "c") for item in first_round} == {"a", "b", "c"}


def test_kept_pairs_rejects_unknown_modes_and_mismatched_lengths() -> None:
    with pytest.raises(StascError, match="Did you mean 'non_decreasing'"):
        kept_pairs([], [], [], "non-decreasing")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="question id"):
        kept_pairs([0], [1], [], "improving")
    with pytest.raises(ValueError, match="0 or 1"):
        kept_pairs([0, 0], [1, 2], ["a", "b"], "improving")


def test_own_answer_fixes_pair_unfixed_wrong_answers_with_a_right_answer_to_the_same_question() -> None:
    rows = [  # (question, initial index, initial reward, output, output reward): each answer, then its corrections
        ("a", 0, 0, "Lyon", 0), ("a", 0, 0, "Lyon.", 0),  # wrong, not fixed: gets one of a's right answers
        ("a", 1, 1, "Paris", 1), ("a", 1, 1, "It is Paris", 1),
        ("a", 2, 0, "Nice", 0), ("a", 2, 0, "Paris!", 1),  # fixed by its own correction: nothing to add
        ("b", 0, 0, "Oslo", 0), ("b", 0, 0, "Bergen", 0),  # b never answered right: nothing to borrow
    ]
    question, index, initial, output, reward = (list(column) for column in zip(*rows, strict=True))
    fixes = own_answer_fixes(question, index, initial, output, reward, seed=0)
    assert set(fixes) == {("a", 0)}
    assert fixes[("a", 0)] in {"Paris", "It is Paris", "Paris!"}
    drawn = {own_answer_fixes(question, index, initial, output, reward, seed=seed)[("a", 0)] for seed in range(20)}
    assert len(drawn) > 1, "the seed chooses among the right answers"
    with pytest.raises(ValueError, match="0 or 1"):
        own_answer_fixes(["a"], [0], [0], ["x"], [2])

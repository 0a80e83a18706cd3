"""Which (initial answer, correction) pairs STaSC trains on, and how answers move between correct
and incorrect when the model corrects itself."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from stasc.errors import check_choice

FilterMode = Literal["improving", "non_decreasing", "non_decreasing_authors", "balanced"]
FILTER_MODES: tuple[str, ...] = ("improving", "non_decreasing", "non_decreasing_authors", "balanced")


def check_filter_mode(name: str) -> FilterMode:
    """Validate a filter mode from user input, suggesting the closest valid one on a typo."""
    return cast(FilterMode, check_choice(name, FILTER_MODES, "filter mode"))


def _check_reward(reward: int) -> None:
    """Rewards are binary; anything else means a metric score leaked in unthresholded."""
    if reward not in (0, 1):
        raise ValueError(f"rewards must be 0 or 1, got {reward!r}")


def keep_correction(initial_reward: int, correction_reward: int, mode: FilterMode) -> bool:
    """Whether one pair may become training data: it must end correct; "improving" also needs a wrong
    initial answer, "non_decreasing_authors" a right one (the authors' code keeps right-stays-right only).
    "balanced" accepts both kinds here and caps the right-stays-right ones in kept_pairs."""
    _check_reward(initial_reward)
    _check_reward(correction_reward)
    mode = check_filter_mode(mode)
    if correction_reward != 1:
        return False
    if mode == "improving":
        return initial_reward == 0
    if mode == "non_decreasing_authors":
        return initial_reward == 1
    return True


def kept_pairs(
    initial_rewards: Sequence[int],
    correction_rewards: Sequence[int],
    question_ids: Sequence[Hashable],
    mode: FilterMode,
    *,
    keep_ratio: float = 1.0,
    extra_fixes: int = 0,
    seed: int = 0,
) -> list[bool]:
    """The filter's decision for every pair, in order.

    The balanced filter keeps every wrong-to-right pair and at most keep_ratio right-stays-right pairs per
    wrong-to-right pair (extra_fixes counts wrong-to-right examples from elsewhere, e.g. rationalizations):
    a model that mostly copies its answer finds many more pairs that stay right than pairs that fix an
    answer, and training on all of them teaches it to copy. The right-stays-right pairs it keeps are
    spread over questions (one per question in a seeded order, then a second, ...).
    """
    mode = check_filter_mode(mode)
    if not len(initial_rewards) == len(correction_rewards) == len(question_ids):
        raise ValueError("every pair needs an initial reward, a correction reward and a question id")
    keep = [
        keep_correction(initial, correction, mode)
        for initial, correction in zip(initial_rewards, correction_rewards, strict=True)
    ]
    if mode != "balanced":
        return keep
    stays_right = [index for index, initial in enumerate(initial_rewards) if keep[index] and initial == 1]
    fixes = sum(keep) - len(stays_right) + extra_fixes
    budget = min(len(stays_right), int(keep_ratio * fixes + 1e-9))
    for index in stays_right:
        keep[index] = False
    for index in spread_over_groups(stays_right, [question_ids[index] for index in stays_right], seed)[:budget]:
        keep[index] = True
    return keep


def spread_over_groups(items: Sequence[int], groups: Sequence[Hashable], seed: int) -> list[int]:
    """items reordered so that every group gives one before any gives a second (groups and their
    members in a seeded random order)."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for item, group in zip(items, groups, strict=True):
        members[group].append(item)
    shuffler = random.Random(seed)
    order = list(members)
    shuffler.shuffle(order)
    for group in order:
        shuffler.shuffle(members[group])
    rounds = max((len(group) for group in members.values()), default=0)
    return [members[group][turn] for turn in range(rounds) for group in order if turn < len(members[group])]


def own_answer_fixes(
    question_ids: Sequence[Hashable],
    initial_indices: Sequence[int],
    initial_rewards: Sequence[int],
    outputs: Sequence[str],
    output_rewards: Sequence[int],
    *,
    seed: int = 0,
) -> dict[tuple[Hashable, int], str]:
    """For every wrong initial answer that none of its corrections fixed, one right answer the model gave to
    the same question elsewhere (a right initial answer or a right correction), drawn with the seed; none
    for a question the model never got right. Rows are (question, initial answer, one output of it), where
    the outputs are the initial answers themselves and their corrections.

    Such a pair teaches a fix the model can already produce, unlike a hinted rationalization, which can
    teach an answer the model does not know."""
    if not len(question_ids) == len(initial_indices) == len(initial_rewards) == len(outputs) == len(output_rewards):
        raise ValueError("every output needs its question id, initial index and both rewards")
    right: dict[Hashable, list[str]] = defaultdict(list)
    fixed: dict[tuple[Hashable, int], bool] = {}
    for question, index, initial, output, reward in zip(
        question_ids, initial_indices, initial_rewards, outputs, output_rewards, strict=True
    ):
        _check_reward(initial)
        _check_reward(reward)
        if reward == 1 and output not in right[question]:
            right[question].append(output)
        if initial == 0:
            fixed[(question, index)] = fixed.get((question, index), False) or reward == 1
    shuffler = random.Random(seed)
    return {
        key: shuffler.choice(right[key[0]]) for key, was_fixed in fixed.items() if not was_fixed and right[key[0]]
    }


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

from __future__ import annotations

import numpy as np
import pytest

from stasc.core.bootstrap import Estimate, bootstrap_difference, bootstrap_mean


def test_interval_brackets_the_mean_and_has_the_normal_width() -> None:
    values = [1] * 60 + [0] * 60  # accuracy 0.5 on 120 questions
    estimate = bootstrap_mean(values)
    assert estimate.value == 0.5
    assert estimate.low < 0.5 < estimate.high
    # the normal approximation gives +- 1.96 * sqrt(0.25 / 120) = 0.089
    assert estimate.high - estimate.low == pytest.approx(2 * 0.0895, abs=0.01)


def test_interval_narrows_with_more_questions() -> None:
    small = bootstrap_mean([1, 0] * 30)
    large = bootstrap_mean([1, 0] * 300)
    assert (large.high - large.low) < (small.high - small.low) / 2


def test_same_seed_same_interval() -> None:
    values = np.random.default_rng(3).integers(0, 2, 50)
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)


def test_paired_difference_sees_a_consistent_gain_that_separate_intervals_would_miss() -> None:
    """A model that fixes 12 of 120 questions and breaks none: the separate intervals overlap,
    the paired one excludes zero."""
    before = [1] * 50 + [0] * 70
    after = [1] * 62 + [0] * 58
    separate_before, separate_after = bootstrap_mean(before), bootstrap_mean(after)
    assert separate_after.low < separate_before.high  # overlapping
    paired = bootstrap_difference(after, before)
    assert paired.value == pytest.approx(0.1)
    assert paired.excludes_zero()


def test_changes_in_both_directions_give_an_interval_around_zero() -> None:
    first = np.array([1] * 60 + [0] * 60)
    second = first.copy()
    second[:10] = 0  # ten questions lost
    second[60:70] = 1  # ten others gained
    difference = bootstrap_difference(second, first)
    assert difference.value == 0
    assert not difference.excludes_zero()


def test_bad_samples_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_difference([1, 0], [1])


def test_format_shows_value_and_interval() -> None:
    assert Estimate(0.5, 0.41, 0.59).format() == "0.500 [0.410, 0.590]"

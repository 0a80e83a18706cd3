"""Evaluation metrics: acc_t1, acc_t2, delta, i_to_c, c_to_i with paired bootstrap intervals over questions."""

from __future__ import annotations

import numpy as np
import pytest

from stasc.core.metrics import ALIASES, HEADLINE, per_question, self_correction_metrics


def test_samples_of_a_question_are_averaged_before_questions() -> None:
    # question a: 2 samples (right->right, wrong->right); question b: 1 sample (right->wrong)
    metrics, _ = self_correction_metrics(["a", "a", "b"], [1, 0, 1], [1, 1, 0])
    assert metrics["acc_t1"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["acc_t2"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics["delta"] == pytest.approx(0.5 - 0.75)
    assert metrics["i_to_c"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["c_to_i"] == pytest.approx((0.0 + 1.0) / 2)
    assert metrics["c_to_c"] + metrics["c_to_i"] + metrics["i_to_c"] + metrics["i_to_i"] == pytest.approx(1.0)


def test_older_names_are_aliases_of_the_new_ones() -> None:
    metrics, intervals = self_correction_metrics(list("abcd"), [1, 0, 0, 1], [1, 1, 0, 0])
    for old, new in ALIASES.items():
        assert metrics[old] == metrics[new]
    assert set(intervals) == set(HEADLINE)


def test_delta_equals_the_change_and_i_to_c_minus_c_to_i() -> None:
    rng = np.random.default_rng(3)
    initial, correction = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    questions = np.repeat(np.arange(100), 3)
    metrics, _ = self_correction_metrics(list(questions), list(initial), list(correction))
    assert metrics["delta"] == pytest.approx(metrics["acc_t2"] - metrics["acc_t1"])
    assert metrics["delta"] == pytest.approx(metrics["i_to_c"] - metrics["c_to_i"])


def test_an_interval_excludes_zero_for_a_real_effect() -> None:
    # 200 questions, half answered wrong at first; corrections fix 40% of the wrong answers and break none
    rng = np.random.default_rng(0)
    initial = (rng.random(200) < 0.5).astype(int)
    correction = np.where(initial == 1, 1, (rng.random(200) < 0.4).astype(int))
    metrics, intervals = self_correction_metrics(list(range(200)), list(initial), list(correction))
    low, high = intervals["delta"]
    assert 0 < low <= metrics["delta"] <= high
    assert intervals["i_to_c"][0] > 0.05


def test_an_interval_includes_zero_when_corrections_are_no_better() -> None:
    # corrections drawn independently with the same accuracy as the first answers: no effect
    rng = np.random.default_rng(1)
    initial = (rng.random(300) < 0.5).astype(int)
    correction = (rng.random(300) < 0.5).astype(int)
    metrics, intervals = self_correction_metrics(list(range(300)), list(initial), list(correction))
    low, high = intervals["delta"]
    assert low < 0 < high
    assert metrics["i_to_c"] > 0.15 and metrics["c_to_i"] > 0.15, "answers move both ways, they cancel out"


def test_intervals_are_paired_over_questions() -> None:
    # the same questions are resampled for both turns: a constant gain has a zero-width interval,
    # although each turn's own accuracy is uncertain
    initial = [0, 1] * 50
    correction = [1, 1] * 50
    _, intervals = self_correction_metrics(list(range(100)), initial, correction)
    assert intervals["acc_t1"][1] - intervals["acc_t1"][0] > 0.1
    assert intervals["delta"][1] - intervals["delta"][0] > 0.1  # per question, gains differ (0 or 1)
    same, same_intervals = self_correction_metrics(list(range(100)), initial, initial)
    assert same["delta"] == 0 and same_intervals["delta"] == [0.0, 0.0]


def test_per_question_rejects_non_binary_and_mismatched_input() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        per_question(["a"], [2], [1])
    with pytest.raises(ValueError, match="exactly one correction"):
        per_question(["a", "b"], [1], [1])


def test_no_questions_give_zeros() -> None:
    metrics, intervals = self_correction_metrics([], [], [])
    assert metrics["acc_t1"] == 0.0 and intervals["delta"] == [0.0, 0.0]


def test_round_metrics_follow_each_turn_to_the_next() -> None:
    from stasc.core.metrics import round_metrics

    turns = [[0, 1, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0]]
    metrics, intervals = round_metrics(list("abcd"), turns)
    assert metrics["acc_t1"] == 0.5 and metrics["acc_t2"] == 0.5 and metrics["acc_t3"] == 0.5
    assert metrics["i_to_c_t2_t3"] == 0.25 and metrics["c_to_i_t2_t3"] == 0.25
    assert metrics["delta_t1_t3"] == 0.0 and set(intervals) >= {"acc_t3", "delta_t2_t3", "delta_t1_t3"}
    two, _ = round_metrics(list("abcd"), turns[:2])
    assert "acc_t3" not in two and two["i_to_c"] == 0.25

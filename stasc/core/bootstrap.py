"""Confidence intervals for comparing runs: percentile bootstrap over test questions.

A test set of 120 questions leaves a run's accuracy uncertain by several points, so every
reported accuracy carries a 95% interval, and a claim that one model beats another rests on
the interval of the paired difference (same questions, resampled together), not on two
overlapping intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean and its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (a difference that holds up)."""
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _resampled_means(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` bootstrap samples of the rows (questions) of columns."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, columns.shape[0], size=(resamples, columns.shape[0]))
    return columns[picks].mean(axis=1)


def bootstrap_means(
    columns: np.ndarray, *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> list[Estimate]:
    """The mean of each column of a (questions x measures) array, each with a percentile interval from
    the same resampled questions, so measures of one question stay paired."""
    columns = np.asarray(columns, dtype=float)
    if columns.ndim != 2 or columns.shape[0] == 0:
        raise ValueError("Cannot bootstrap an empty sample.")
    means = _resampled_means(columns, resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)
    return [
        Estimate(float(value), float(lo), float(hi))
        for value, lo, hi in zip(columns.mean(axis=0), low, high, strict=True)
    ]


def bootstrap_mean(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Estimate:
    """The mean of values (e.g. 0/1 correctness per question) with a percentile interval."""
    column = np.asarray(values, dtype=float)
    if column.size == 0:
        raise ValueError("Cannot bootstrap an empty sample.")
    return bootstrap_means(column[:, None], confidence=confidence, resamples=resamples, seed=seed)[0]


def bootstrap_difference(
    first: Sequence[float], second: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000,
    seed: int = 0,
) -> Estimate:
    """mean(first) - mean(second) for paired samples (the same questions), with a percentile interval."""
    if len(first) != len(second):
        raise ValueError(f"Paired samples differ in length ({len(first)} and {len(second)}).")
    pairs = np.column_stack([np.asarray(first, dtype=float), np.asarray(second, dtype=float)])
    if pairs.size == 0:
        raise ValueError("Cannot bootstrap an empty sample.")
    means = _resampled_means(pairs, resamples, seed)
    differences = means[:, 0] - means[:, 1]
    tail = (1 - confidence) / 2 * 100
    return Estimate(
        float(pairs[:, 0].mean() - pairs[:, 1].mean()),
        float(np.percentile(differences, tail)),
        float(np.percentile(differences, 100 - tail)),
    )

"""Evaluation metrics of one iteration, named as in the self-correction literature (SCoRe):

- acc_t1: in-accuracy of the initial answers (turn 1), acc_t2: of the corrections (turn 2);
- delta = acc_t2 - acc_t1: what correcting itself gains the model;
- i_to_c / c_to_i: shares of initial answers that the correction fixed / broke.

With K initial answers per question (each with its correction), every measure is first averaged
over a question's K samples, then over questions; each carries a 95% percentile bootstrap interval
over questions, with all measures resampled together (paired). The manifest also keeps the older
names (initial_in_acc, correction_in_acc, incorrect_to_correct, correct_to_incorrect, ...).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from stasc.core.bootstrap import bootstrap_means

HEADLINE = ("acc_t1", "acc_t2", "delta", "i_to_c", "c_to_i")
ALIASES = {
    "initial_in_acc": "acc_t1",
    "correction_in_acc": "acc_t2",
    "incorrect_to_correct": "i_to_c",
    "correct_to_incorrect": "c_to_i",
    "correct_to_correct": "c_to_c",
    "incorrect_to_incorrect": "i_to_i",
}


def per_question(question_ids: Sequence[Hashable], initial_correct: Sequence[int], correction_correct: Sequence[int]) -> np.ndarray:
    """One row per question (in first-seen order): the shares of its samples that were right initially,
    right after correction, their difference, fixed (wrong to right), broken (right to wrong), kept
    right and left wrong."""
    if not len(question_ids) == len(initial_correct) == len(correction_correct):
        raise ValueError("Every initial answer needs exactly one correction and one question id.")
    rows: dict[Hashable, list[np.ndarray]] = {}
    for question, initial, correction in zip(question_ids, initial_correct, correction_correct, strict=True):
        if initial not in (0, 1) or correction not in (0, 1):
            raise ValueError(f"correctness must be 0 or 1, got {initial!r} and {correction!r}")
        sample = np.array(
            [initial, correction, correction - initial, (1 - initial) * correction, initial * (1 - correction),
             initial * correction, (1 - initial) * (1 - correction)],
            dtype=float,
        )
        rows.setdefault(question, []).append(sample)
    return np.array([np.mean(samples, axis=0) for samples in rows.values()]).reshape(-1, 7)


def self_correction_metrics(
    question_ids: Sequence[Hashable],
    initial_correct: Sequence[int],
    correction_correct: Sequence[int],
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metrics, intervals): acc_t1, acc_t2, delta, i_to_c, c_to_i, c_to_c, i_to_i and the older
    names as aliases; a [low, high] 95% interval for each headline measure."""
    table = per_question(question_ids, initial_correct, correction_correct)
    names = (*HEADLINE, "c_to_c", "i_to_i")
    if len(table) == 0:
        metrics = dict.fromkeys(names, 0.0)
        intervals = {name: [0.0, 0.0] for name in HEADLINE}
    else:
        estimates = bootstrap_means(table, resamples=resamples, seed=seed)
        metrics = {name: estimate.value for name, estimate in zip(names, estimates, strict=True)}
        intervals = {
            name: [estimate.low, estimate.high]
            for name, estimate in zip(names, estimates, strict=True)
            if name in HEADLINE
        }
    metrics.update({old: metrics[new] for old, new in ALIASES.items()})
    return metrics, intervals


def round_metrics(
    question_ids: Sequence[Hashable], turns: Sequence[Sequence[int]], *, resamples: int = 10_000, seed: int = 0
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """self_correction_metrics of the first two turns, and for each later turn t (Self-Refine rounds): acc_t{t},
    and delta, i_to_c and c_to_i from turn t-1 to turn t (suffix _t{t-1}_t{t}), plus delta_t1_t{last}."""
    if len(turns) < 2:
        raise ValueError("at least an initial answer and one correction per sample")
    metrics, intervals = self_correction_metrics(question_ids, turns[0], turns[1], resamples=resamples, seed=seed)
    for turn in range(3, len(turns) + 1):
        step, step_intervals = self_correction_metrics(
            question_ids, turns[turn - 2], turns[turn - 1], resamples=resamples, seed=seed
        )
        metrics[f"acc_t{turn}"], intervals[f"acc_t{turn}"] = step["acc_t2"], step_intervals["acc_t2"]
        for name in ("delta", "i_to_c", "c_to_i"):
            key = f"{name}_t{turn - 1}_t{turn}"
            metrics[key], intervals[key] = step[name], step_intervals[name]
    if len(turns) > 2:
        whole, whole_intervals = self_correction_metrics(
            question_ids, turns[0], turns[-1], resamples=resamples, seed=seed
        )
        key = f"delta_t1_t{len(turns)}"
        metrics[key], intervals[key] = whole["delta"], whole_intervals["delta"]
    return metrics, intervals


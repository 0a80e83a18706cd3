"""Evaluation metrics of one iteration: accuracy of initial answers and corrections, and transitions."""

from __future__ import annotations

from collections.abc import Sequence

from stasc.core.filtering import count_transitions


def iteration_metrics(
    initial_correct: Sequence[int], correction_correct: Sequence[int], prefix: str = ""
) -> dict[str, float]:
    """initial_in_acc, correction_in_acc and the four transition rates between them."""
    if len(initial_correct) != len(correction_correct):
        raise ValueError("Every initial answer needs exactly one correction.")
    total = len(initial_correct)
    transitions = count_transitions(zip(initial_correct, correction_correct, strict=True))
    metrics = {
        f"{prefix}initial_in_acc": sum(initial_correct) / total if total else 0.0,
        f"{prefix}correction_in_acc": sum(correction_correct) / total if total else 0.0,
    }
    metrics.update({f"{prefix}{name}": rate for name, rate in transitions.rates().items()})
    return metrics

"""Dropping the rows that finished from a decode batch by moving a few rows, not copying all of them.

Selecting the unfinished rows of a KV cache copies the whole cache, at every step where some row
produced end-of-turn. Instead, each finished row among the first (number unfinished) rows takes
an unfinished row from after them, and the tail is cut off: a view, so only the moved rows are
copied. Row order changes; callers keep a list of which sequence each row holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def compaction_moves(finished: Sequence[bool]) -> tuple[list[int], list[int]]:
    """(holes, movers): row movers[i] takes the place of row holes[i], after which the unfinished rows come first."""
    remaining = len(finished) - sum(finished)
    holes = [row for row in range(remaining) if finished[row]]
    movers = [row for row in range(remaining, len(finished)) if not finished[row]]
    return holes, movers


def moved_rows(tensor: torch.Tensor, holes: torch.Tensor, movers: torch.Tensor, remaining: int) -> torch.Tensor:
    """`tensor` (rows first) with the moves done in place and only the first `remaining` rows kept."""
    if holes.numel():
        tensor[holes] = tensor[movers]
    return tensor[:remaining]

"""Dropping finished rows by moving a few rows into their places."""

from __future__ import annotations

import torch

from stasc.sampling.cpu_engine.row_compaction import compaction_moves, moved_rows


def test_unfinished_rows_from_the_end_fill_the_places_of_finished_ones() -> None:
    finished = [False, True, False, True, False, False]
    holes, movers = compaction_moves(finished)
    assert (holes, movers) == ([1, 3], [4, 5])
    rows = torch.arange(6) * 10
    kept = moved_rows(rows, torch.tensor(holes), torch.tensor(movers), remaining=4)
    assert kept.tolist() == [0, 40, 20, 50]  # the four unfinished rows: 4 and 5 moved into the places of 1 and 3
    assert kept.data_ptr() == rows.data_ptr(), "a view of the same storage: nothing else copied"


def test_finished_rows_at_the_end_are_simply_cut_off() -> None:
    assert compaction_moves([False, False, True, True]) == ([], [])
    rows = torch.arange(4)
    assert moved_rows(rows, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2).tolist() == [0, 1]


def test_all_or_no_rows_finished() -> None:
    assert compaction_moves([True, True]) == ([], [])
    assert compaction_moves([False, False]) == ([], [])

"""Which sequences share a decode row, after each drawn token."""

from __future__ import annotations

from stasc.sampling.cpu_engine.shared_rows import regrouped, sample_groups

STOP = 2


def test_all_samples_of_a_prompt_start_in_its_row() -> None:
    assert sample_groups(3, 2) == [[0, 1], [2, 3], [4, 5]]
    assert sample_groups(2, 1) == [[0], [1]]


def test_a_row_whose_samples_agree_stays_one_row() -> None:
    rows = regrouped([[0, 1, 2], [3, 4, 5]], [7, 7, 7, 9, 9, 9], {STOP})
    assert rows.groups == [[0, 1, 2], [3, 4, 5]]
    assert rows.tokens == [7, 9]
    assert (rows.holes, rows.movers, rows.remaining, rows.copies_of) == ([], [], 2, [])


def test_a_row_splits_by_token_and_the_other_tokens_get_copies_after_the_rows() -> None:
    rows = regrouped([[0, 1, 2, 3], [4, 5]], [7, 8, 7, 9, 5, 5], {STOP})
    assert rows.groups == [[0, 2], [4, 5], [1], [3]]
    assert rows.tokens == [7, 5, 8, 9]
    assert rows.copies_of == [0, 0], "both new rows start from row 0's cache"
    assert rows.remaining == 2


def test_stopped_sequences_leave_and_a_row_with_none_left_is_dropped() -> None:
    # row 0: both stop; row 1: one stops; row 2: splits in two
    rows = regrouped([[0, 1], [2, 3], [4, 5]], [STOP, STOP, STOP, 6, 7, 8], {STOP})
    assert rows.holes == [0] and rows.movers == [2] and rows.remaining == 2, "row 2 moves into row 0's place"
    assert rows.groups == [[4], [3], [5]]
    assert rows.tokens == [7, 6, 8]
    assert rows.copies_of == [0], "the copy is of row 2 where it now stands"


def test_when_every_sequence_stops_no_rows_are_left() -> None:
    rows = regrouped([[0, 1], [2]], [STOP, STOP, STOP], {STOP})
    assert rows.groups == [] and rows.remaining == 0 and rows.copies_of == []

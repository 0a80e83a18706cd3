from __future__ import annotations

from collections.abc import Callable

import pytest

from stasc.errors import StascError
from stasc.core.rewards import (
    EXTRACTIONS,
    REWARD_NAMES,
    binary_reward,
    check_extraction,
    check_reward_name,
    exact_match,
    extract_answer,
    in_accuracy,
    normalize_answer,
    score_output,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("PARIS", "paris"),
        ("Paris!", "paris"),
        ("St. Louis", "st louis"),
        ("rock-and-roll", "rock and roll"),
        ("The Beatles", "beatles"),
        ("a cat and an apple", "cat and apple"),
        ("Theatre", "theatre"),
        ("anthem", "anthem"),
        ("  New \t York\n City  ", "new york city"),
        ("Zürich", "zurich"),
        ("Gabriel García Márquez", "gabriel garcia marquez"),
        ("1914–1918", "1914 1918"),
        ("well—known", "well known"),
        ("\u201cCasablanca\u201d", "casablanca"),
        ("\u00abLes Mis\u00e9rables\u00bb", "les miserables"),
        ("O\u2019Brien", "o brien"),
        ("¿Qué?", "que"),
        ("The.", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_normalize_answer_makes_composed_and_decomposed_accents_equal() -> None:
    composed = "Z\u00fcrich"
    decomposed = "Zu\u0308rich"
    assert normalize_answer(composed) == normalize_answer(decomposed) == "zurich"


@pytest.mark.parametrize(
    ("output", "reference"),
    [
        ("The capital is Pa\u200bris.", "Paris"),  # a zero-width space, as copied from a web page
        ("Pa\u200d\u2060ris", "Paris"),  # zero-width joiner, word joiner
        ("Mis\u00adsis\u00adsip\u00adpi", "Mississippi"),  # soft hyphens
        ("\ufb01sh and chips", "fish and chips"),  # the ligature fi
        ("\uff30\uff41\uff52\uff49\uff53", "Paris"),  # full-width letters
        ("Louis \u2164", "Louis V"),  # the Roman numeral five as one character
        ("H\u2082O", "H2O"),  # a subscript digit
    ],
)
def test_compatibility_forms_and_invisible_characters_do_not_decide_correctness(output: str, reference: str) -> None:
    assert in_accuracy(output, [reference]) == 1.0
    assert exact_match(output.removeprefix("The capital is ").rstrip("."), [reference]) == 1.0


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Reasoning here.\nFinal Answer: Paris", "Paris"),
        ("final answer: Paris", "Paris"),
        ("FINAL ANSWER:Paris", "Paris"),
        ("Final Answer : Paris", "Paris"),
        ("**Final Answer:** Paris", "Paris"),
        ("**Final Answer**: Paris", "Paris"),
        ("Final Answer:   Paris  \n", "Paris"),
        ("Final Answer: Paris\nFinal Answer: London", "Paris\nFinal Answer: London"),
        ("Final Answer:", ""),
    ],
)
def test_extract_final_answer(output: str, expected: str) -> None:
    assert extract_answer(output, "final_answer") == expected


@pytest.mark.parametrize("output", ["Paris", "The answer is Paris.", "Final: Paris", "Answer: Paris"])
def test_extract_final_answer_missing_marker_is_none(output: str) -> None:
    assert extract_answer(output, "final_answer") is None


def test_extract_full_returns_whole_output() -> None:
    output = "Step 1.\nFinal Answer: Paris"
    assert extract_answer(output, "full") == output


def test_first_final_answer_marker_wins_when_scoring() -> None:
    output = "Final Answer: London\nFinal Answer: Paris"
    assert score_output(output, ["London"], metric="in_acc", extraction="final_answer") == 1.0
    # Had the last marker won, the extracted answer would be exactly "Paris".
    assert score_output(output, ["Paris"], metric="em", extraction="final_answer") == 0.0


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("The capital is Paris.", ["Paris"], 1.0),
        ("the capital is paris", ["PARIS!"], 1.0),
        ("He lived in New York City", ["New York"], 1.0),
        ("He lived in York, New England", ["New York"], 0.0),
        ("It happened in 1914", ["4"], 0.0),
        ("It happened in 14 BC", ["4"], 0.0),
        ("It has 4 legs", ["4"], 1.0),
        ("The 1980s", ["1980s"], 1.0),
        ("1980s", ["the 1980s"], 1.0),
        ("in the 1980", ["1980s"], 0.0),
        ("Born in Zurich", ["Zürich"], 1.0),
        ("Rome", ["Paris", "Rome"], 1.0),
        ("Rome", ["Paris", "London"], 0.0),
        ("Rome", ["The", "?"], 0.0),
        ("The answer is Rome", ["the", "Rome"], 1.0),
        ("", ["Paris"], 0.0),
    ],
)
def test_in_accuracy(prediction: str, golds: list[str], expected: float) -> None:
    assert in_accuracy(prediction, golds) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("Paris", ["paris"], 1.0),
        ("The Paris.", ["Paris"], 1.0),
        ("Paris, France", ["Paris"], 0.0),
        ("London", ["Paris", "london"], 1.0),
        ("", ["the"], 0.0),
        ("The", ["the", "Paris"], 0.0),
    ],
)
def test_exact_match(prediction: str, golds: list[str], expected: float) -> None:
    assert exact_match(prediction, golds) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("Paris", ["Paris"], 1.0),
        ("Paris France", ["Paris"], 2 / 3),
        ("New York", ["New York City"], 0.8),
        ("London", ["Paris"], 0.0),
        ("Paris France", ["London", "Paris France"], 1.0),
        ("", ["Paris"], 0.0),
        ("Paris", ["", "a"], 0.0),
    ],
)
def test_token_f1(prediction: str, golds: list[str], expected: float) -> None:
    assert token_f1(prediction, golds) == pytest.approx(expected)


def test_f1_counts_repeated_tokens_once_per_occurrence() -> None:
    # Two "paris" in the prediction but only one in the gold: precision 1/2, recall 1.
    assert token_f1("paris paris", ["paris"]) == pytest.approx(2 / 3)


def test_metrics_disagree_on_a_verbose_answer() -> None:
    prediction = "It is Paris, France"
    golds = ["Paris"]
    assert in_accuracy(prediction, golds) == 1.0
    assert exact_match(prediction, golds) == 0.0
    # Tokens "it is paris france" vs "paris": precision 1/4, recall 1.
    assert token_f1(prediction, golds) == pytest.approx(0.4)


@pytest.mark.parametrize("metric", REWARD_NAMES)
def test_missing_marker_scores_zero_under_final_answer_but_not_full(metric: str) -> None:
    output = "Paris"
    assert score_output(output, ["Paris"], metric=metric, extraction="final_answer") == 0.0  # type: ignore[arg-type]
    assert score_output(output, ["Paris"], metric=metric, extraction="full") == 1.0  # type: ignore[arg-type]


def test_final_answer_extraction_ignores_reasoning_that_mentions_other_answers() -> None:
    output = "London is a big city, but the capital of France is not it.\nFinal Answer: **Paris**"
    assert score_output(output, ["London"], metric="in_acc", extraction="full") == 1.0
    assert score_output(output, ["London"], metric="in_acc", extraction="final_answer") == 0.0
    assert score_output(output, ["Paris"], metric="em", extraction="final_answer") == 1.0


@pytest.mark.parametrize(
    ("output", "reward", "threshold", "expected"),
    [
        ("Final Answer: Paris", "in_acc", 0.5, 1),
        ("Final Answer: It is Paris", "in_acc", 0.5, 1),
        ("Final Answer: It is Paris", "em", 0.5, 0),
        ("Final Answer: Paris", "em", 0.5, 1),
        ("Final Answer: London", "in_acc", 0.5, 0),
        ("Final Answer: Paris France", "f1", 0.5, 1),
        ("Final Answer: Paris France", "f1", 2 / 3, 1),
        ("Final Answer: Paris France", "f1", 0.7, 0),
        ("Final Answer: Paris France", "f1", 1.0, 0),
        ("Final Answer: Paris", "f1", 1.0, 1),
        ("Final Answer: London", "f1", 0.01, 0),
        ("Paris", "f1", 0.5, 0),
    ],
)
def test_binary_reward(output: str, reward: str, threshold: float, expected: int) -> None:
    result = binary_reward(
        output, ["Paris"], reward=reward, extraction="final_answer", f1_threshold=threshold  # type: ignore[arg-type]
    )
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_binary_reward_rejects_out_of_range_threshold(threshold: float) -> None:
    with pytest.raises(StascError, match="f1_threshold"):
        binary_reward("Paris", ["Paris"], reward="f1", extraction="full", f1_threshold=threshold)


@pytest.mark.parametrize(
    "call",
    [
        lambda: in_accuracy("Paris", []),
        lambda: exact_match("Paris", []),
        lambda: token_f1("Paris", []),
        lambda: score_output("Paris", [], metric="em", extraction="final_answer"),
        lambda: binary_reward("Paris", [], reward="in_acc", extraction="full"),
    ],
)
def test_empty_golds_is_a_programming_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="gold"):
        call()


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_check_reward_name_accepts_valid(name: str) -> None:
    assert check_reward_name(name) == name


@pytest.mark.parametrize("name", EXTRACTIONS)
def test_check_extraction_accepts_valid(name: str) -> None:
    assert check_extraction(name) == name


def test_unknown_reward_suggests_closest() -> None:
    with pytest.raises(StascError) as excinfo:
        check_reward_name("inacc")
    assert str(excinfo.value) == (
        "Unknown reward 'inacc'. Choose one of: in_acc, em, f1. Did you mean 'in_acc'?"
    )


def test_unknown_reward_without_close_match_lists_choices_only() -> None:
    with pytest.raises(StascError) as excinfo:
        check_reward_name("bleu")
    assert str(excinfo.value) == "Unknown reward 'bleu'. Choose one of: in_acc, em, f1."


def test_unknown_extraction_suggests_closest() -> None:
    with pytest.raises(StascError) as excinfo:
        check_extraction("final-answer")
    assert str(excinfo.value) == (
        "Unknown extraction 'final-answer'. Choose one of: full, final_answer. "
        "Did you mean 'final_answer'?"
    )


def test_scoring_rejects_unknown_names() -> None:
    with pytest.raises(StascError, match="Did you mean 'em'"):
        score_output("Paris", ["Paris"], metric="EM ", extraction="full")  # type: ignore[arg-type]
    with pytest.raises(StascError, match="Did you mean 'full'"):
        score_output("Paris", ["Paris"], metric="em", extraction="ful")  # type: ignore[arg-type]

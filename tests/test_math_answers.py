"""Tests for stasc.core.math_answers: where a solution's final answer is, and when two math answers are equal."""

from __future__ import annotations

import threading

import pytest

from stasc.core.math_answers import (
    extract_math_answer,
    final_answer_text,
    last_boxed,
    last_number,
    math_equal,
    math_reward,
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("So the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("First \\boxed{3}, then on reflection \\boxed{4}.", "4"),  # the last box
        ("\\fbox{x^{2}+1}", "x^{2}+1"),
        ("The answer is $\\boxed 5$.", "5"),
        ("Final Answer: \\boxed{7} and more text with 9", "7"),  # a box wins over the line and the last number
        ("I think \\boxed{6}. Then \\boxed{\\frac{1}{", "6"),  # the cut-off last box is skipped
    ],
)
def test_last_boxed_answer(output: str, expected: str) -> None:
    assert extract_math_answer(output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Step 1 gives 3.\nFinal Answer: 42", "42"),
        ("Final Answer: 1\nWait, that is wrong.\nFinal Answer: $2$.", "2"),  # the last marker
        ("**Final Answer:** The final answer is 3/4.", "3/4"),
        ("Final Answer:\n\n  -5  \n", "-5"),  # the answer on the next line
        ("final answer: \\(x+1\\)", "x+1"),
    ],
)
def test_final_answer_line(output: str, expected: str) -> None:
    assert last_boxed(output) is None
    assert extract_math_answer(output) == final_answer_text(output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("24 + 6 = 30", "30"),
        ("It costs $1,250 in all.", "1,250"),
        ("The temperature drops to -3 degrees", "-3"),
        ("10 - 3 leaves 7", "7"),
        ("She ate 3/4 of it", "3/4"),
        ("about 1.5e-3 grams, version x2", "1.5e-3"),  # "x2" is a name, not a number
        ("from 2 to 5-3", "3"),  # the minus of a subtraction is no sign
    ],
)
def test_last_number_when_there_is_no_box_or_marker(output: str, expected: str) -> None:
    assert extract_math_answer(output) == last_number(output) == expected


def test_no_answer_at_all() -> None:
    assert extract_math_answer("I do not know.") is None
    assert math_reward("I do not know.", ["3"]) == 0


EQUAL = [
    ("0.5", "1/2"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "3/4"),
    ("\\tfrac34", "0.75"),
    ("-\\frac{1}{2}", "-0.5"),
    ("1,000", "1000"),
    ("1,000,000", "1000000"),
    ("10\\,000", "10000"),
    ("1e3", "1000"),
    ("1.5e-3", "0.0015"),
    ("6.02e23", "6.02 \\times 10^{23}"),
    ("45^\\circ", "45"),
    ("50\\%", "50"),
    ("\\$5", "5"),
    ("$18", "18"),
    ("5 \\text{ cm}", "5"),
    ("12 dollars", "12"),
    ("18.", "18"),
    ("18.0", "18"),
    ("x+1", "1+x"),
    ("2x", "x*2"),
    ("x^2-1", "(x-1)(x+1)"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("x=3", "3"),
    ("Evelyn", "\\text{Evelyn}"),
    ("\\text{(C)}", "C"),
    ("[0,1]", "[0,1]"),
    ("She has 1,200 marbles", "1200"),
]
NOT_EQUAL = [
    ("1/2", "2"),
    ("3", "30"),
    ("30", "3"),
    ("-2", "2"),
    ("2", "-2"),
    ("0.5", "5"),
    ("1000", "100"),
    ("3.14", "\\pi"),
    ("0.33", "\\frac{1}{3}"),
    ("x", "y"),
    ("x+1", "x-1"),
    ("(1,2)", "(2,1)"),
    ("[0,1]", "(0,1)"),
    ("", "0"),
]


@pytest.mark.parametrize(("prediction", "reference"), EQUAL)
def test_equal_answers(prediction: str, reference: str) -> None:
    assert math_equal(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), NOT_EQUAL)
def test_different_answers(prediction: str, reference: str) -> None:
    assert not math_equal(prediction, reference)


@pytest.mark.parametrize(
    ("output", "references", "expected"),
    [
        ("The pieces add up, so \\boxed{\\frac{1}{2}}", ["0.5"], 1),
        ("The answer is 15, not 5.\nFinal Answer: 15", ["5"], 0),  # "5" occurs, but the final answer is 15
        ("Final Answer: 2", ["-2"], 0),
        ("so she pays 1000 dollars", ["1,000"], 1),
        ("\\boxed{4}", ["3", "4"], 1),  # any reference
    ],
)
def test_math_reward_scores_the_final_answer(output: str, references: list[str], expected: int) -> None:
    assert math_reward(output, references) == expected


def test_math_reward_needs_a_reference() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        math_reward("\\boxed{1}", [])


def test_answers_are_compared_outside_the_main_thread_too() -> None:
    """math-verify's timeout uses SIGALRM, which only the main thread may set (the app scores in worker threads)."""
    results: list[tuple[bool, bool]] = []
    worker = threading.Thread(target=lambda: results.append((math_equal("0.5", "1/2"), math_equal("3", "30"))))
    worker.start()
    worker.join()
    assert results == [(True, False)]

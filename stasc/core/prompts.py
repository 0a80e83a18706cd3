"""The STaSC conversation: question, initial answer, correction request, correction.

The instructions and the question share one user turn (the authors use two consecutive
user turns); templates that enforce alternating roles, such as Gemma's and Mistral's,
reject consecutive user turns, and one turn carries the same text everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

Message = dict[str, str]


def initial_messages(question: str, instructions: str) -> list[Message]:
    """The prompt that asks for a first answer."""
    return [{"role": "user", "content": f"{instructions}\n\nQuestion: {question}"}]


def correction_messages(
    question: str, initial_answer: str, instructions: str, correction_instructions: str
) -> list[Message]:
    """The prompt that asks the model to correct its own initial answer."""
    return [
        *initial_messages(question, instructions),
        {"role": "assistant", "content": initial_answer},
        {"role": "user", "content": correction_instructions},
    ]


def refinement_messages(
    question: str, answers: Sequence[str], instructions: str, correction_instructions: str
) -> list[Message]:
    """The prompt that asks the model to correct the last of its answers again (Self-Refine): the initial
    answer, then each earlier correction, each followed by the correction request."""
    messages = initial_messages(question, instructions)
    for answer in answers:
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": correction_instructions}]
    return messages


def training_messages(
    question: str,
    initial_answer: str,
    correction: str,
    instructions: str,
    correction_instructions: str,
) -> list[Message]:
    """The whole conversation a kept correction is trained on; only its last turn is supervised."""
    return [
        *correction_messages(question, initial_answer, instructions, correction_instructions),
        {"role": "assistant", "content": correction},
    ]


def hinted_correction_messages(
    question: str, initial_answer: str, instructions: str, correction_instructions: str, hint: str, answer: str
) -> list[Message]:
    """The correction prompt with the reference answer given as a hint (STaR's rationalization); the
    correction it yields is trained on under the plain correction prompt, without the hint."""
    request = f"{correction_instructions}\n\n{hint.format(answer=answer)}"
    return correction_messages(question, initial_answer, instructions, request)


def mentions_hint(output: str) -> bool:
    """Whether a hinted correction refers to the hint, which makes no sense once the hint is removed."""
    return "hint" in output.lower()


def answer_messages(question: str, answer: str, instructions: str) -> list[Message]:
    """A question and its answer, as STaR trains on them (no correction turn); only the answer is supervised."""
    return [*initial_messages(question, instructions), {"role": "assistant", "content": answer}]

"""Math answers: find the final answer in a model's solution and decide whether it equals a reference.

Extraction is by hand (the answer's place is a convention of the prompt); equality is Hugging Face's
math-verify, which parses LaTeX and plain expressions into SymPy and compares them symbolically and
numerically, after rewriting two forms it reads differently (``1e3``, ``10\\,000``); a sentence such as
"She has 1,200 marbles" is read as free text, where math-verify finds the number. math-verify is imported
when a math answer is first compared, so QA runs (and bench/gpu_check.py, in images without it) do not need it.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence

from stasc.core.rewards import _FINAL_ANSWER  # the marker the QA task's final_answer extraction reads
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A number: optional sign (not the minus of a subtraction), thousands groups or digits, decimals, a
# denominator, an exponent. Not preceded by a letter, digit or dot, so "x2" and "1.5" give no "2" or "5".
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+)?"
)
_LEADING_PHRASE = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Thin spaces and LaTeX spacing commands between digit groups: 10\,000 and 10 000 (U+2009, U+202F) are 10000.
_GROUP_SEPARATOR = re.compile(r"(?<=\d)(?:\\[,;:! ]|~|[\u2009\u202f])(?=\d{3}(?!\d))")
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
# A word of prose: three letters not part of a LaTeX command or its braced argument.
_WORD = re.compile(r"(?<![\\{A-Za-z])[A-Za-z]{3,}")
# A guard against parses that never end, not a budget: wall-clock time, which a busy machine stretches.
_PARSE_TIMEOUT_S = 20


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at text[start], nested braces included; None if unclosed."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{" and text[index - 1 : index] != "\\":
            depth += 1
        elif text[index] == "}" and text[index - 1 : index] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index]
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} or \\fbox{...} (also \\boxed 5), nested braces kept.

    A last box cut off by the token limit is skipped for the one before it."""
    for match in reversed(list(_BOXED.finditer(text))):
        position = match.end()
        while position < len(text) and text[position] == " ":
            position += 1
        if text[position : position + 1] == "{":
            content = _braced(text, position)
            if content is not None:
                return content.strip()
        else:
            token = re.match(r"[^\s$]+", text[position:])
            if token:
                return token.group(0)
    return None


def final_answer_text(text: str) -> str | None:
    """The answer after the last "Final Answer:" (the rest of its line, or the next non-empty line)."""
    markers = list(_FINAL_ANSWER.finditer(text))
    if not markers:
        return None
    for line in text[markers[-1].end() :].split("\n"):
        answer = _strip_wrapping(line)
        if answer:
            return answer
    return None


def last_number(text: str) -> str | None:
    """The last number in the text (sign, thousands separators, decimals, a/b and exponents included)."""
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_math_answer(output: str) -> str | None:
    """The final answer of a solution: the last \\boxed{...}, else the "Final Answer:" line, else the last
    number; None when there is none of these."""
    return last_boxed(output) or final_answer_text(output) or last_number(output)


def _strip_wrapping(text: str) -> str:
    """Drop markdown bold, "The answer is", math delimiters and a closing period around an answer."""
    text = text.strip().strip("*").strip()
    text = _LEADING_PHRASE.sub("", text)
    text = text.rstrip(".").strip()
    for opening, closing in _MATH_DELIMITERS:
        if len(text) > len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
            text = text[len(opening) : -len(closing)].strip()
            break
    return text.rstrip(".").strip()


def _rewrite(text: str) -> str:
    """Rewrite forms math-verify reads differently: digit groups spaced with \\, and exponents such as 1e3."""
    text = _GROUP_SEPARATOR.sub("", _strip_wrapping(text))
    return _SCIENTIFIC.sub(r"\1\\times 10^{\2}", text)


def _timeout() -> int | None:
    """math-verify times out with SIGALRM, which only the main thread may set; elsewhere it runs untimed."""
    return _PARSE_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=65536)
def _parsed(text: str) -> tuple[object, ...]:
    """SymPy forms of an answer. LaTeX math is read inside $...$; a sentence ("She has 1,200 marbles") is
    read as free text first, where math-verify finds the expression in it."""
    from math_verify import parse

    as_math = None if _UNESCAPED_DOLLAR.search(text) else f"${text}$"
    readings = [text, as_math] if _WORD.search(text) else [as_math, text]
    for reading in readings:
        if reading is not None and (found := parse(reading, parsing_timeout=_timeout())):
            return tuple(found)
    return ()


def _plain(text: str) -> str:
    """A last-resort textual form for answers no parser reads: no \\text{} and no spaces."""
    return re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", text).replace(" ", "")


def math_equal(prediction: str, reference: str) -> bool:
    """Whether a predicted answer is mathematically the same as a reference answer."""
    prediction, reference = _rewrite(prediction), _rewrite(reference)
    if not prediction or not reference:
        return False
    if _plain(prediction) == _plain(reference):
        return True
    gold, target = _parsed(reference), _parsed(prediction)
    if not gold or not target:
        return False
    from math_verify import verify

    return bool(verify(list(gold), list(target), timeout_seconds=_timeout()))


def math_reward(output: str, references: Sequence[str]) -> int:
    """1 when the final answer of a solution equals any reference answer, else 0 (also when it has none)."""
    if not references:
        raise ValueError("references must contain at least one reference answer")
    answer = extract_math_answer(output)
    if answer is None:
        return 0
    return int(any(math_equal(answer, reference) for reference in references))

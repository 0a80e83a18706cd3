"""Binary rewards for open-domain QA: the signal STaSC uses to filter corrections and to evaluate.

Normalisation and metrics follow the SQuAD conventions so that scores are comparable with the
paper; in-accuracy ("in_acc") is the paper's headline metric.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Literal, cast

from stasc.errors import StascError, check_choice

RewardName = Literal["in_acc", "em", "f1"]
Extraction = Literal["full", "final_answer"]
REWARD_NAMES: tuple[str, ...] = ("in_acc", "em", "f1")
EXTRACTIONS: tuple[str, ...] = ("full", "final_answer")

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = frozenset({"a", "an", "the"})
# Nonspacing marks (accents once decomposed) and format characters (zero-width space, joiners, soft hyphen).
_DROPPED_CATEGORIES = frozenset({"Mn", "Cf"})
# "Final Answer:" with optional markdown bold around the label or the colon ("**Final Answer:**",
# "**Final Answer**:") and optional spaces before the colon.
_FINAL_ANSWER = re.compile(r"final\s+answer\s*(?:\*\*)?\s*:(?:\s*\*\*)?", re.IGNORECASE)


def check_reward_name(name: str) -> RewardName:
    """Validate a reward name from user input, suggesting the closest valid one on a typo."""
    return cast(RewardName, check_choice(name, REWARD_NAMES, "reward"))


def check_extraction(name: str) -> Extraction:
    """Validate an answer-extraction name from user input, suggesting the closest valid one."""
    return cast(Extraction, check_choice(name, EXTRACTIONS, "extraction"))


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """Normalise text SQuAD-style so that surface differences (case, accents, punctuation,
    articles, spacing) do not decide whether an answer is right.

    Compatibility forms are folded (NFKC: the ligature "ﬁ" is "fi", full-width "Ｐａｒｉｓ" is "Paris"),
    invisible format characters (zero-width spaces and joiners, soft hyphens) are dropped, and so
    are accents (the combining marks of the decomposed text)."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(char for char in decomposed if unicodedata.category(char) not in _DROPPED_CATEGORIES)
    lowered = unicodedata.normalize("NFKC", kept).lower()
    spaced = "".join(" " if _is_punctuation(char) else char for char in lowered)
    return " ".join(token for token in spaced.split() if token not in _ARTICLES)


def extract_answer(output: str, extraction: Extraction) -> str | None:
    """Return the part of a model output that is scored; None when the requested part is absent."""
    if check_extraction(extraction) == "full":
        return output
    match = _FINAL_ANSWER.search(output)
    if match is None:
        return None
    return output[match.end() :].strip()


def _require_golds(golds: Sequence[str]) -> None:
    """Reject an empty gold list: data loading guarantees one, so its absence is a bug upstream."""
    if not golds:
        raise ValueError("golds must contain at least one gold answer")


def _gold_token_lists(golds: Sequence[str]) -> list[list[str]]:
    """Tokenise the gold aliases, dropping those with no tokens: they carry no answer to match."""
    _require_golds(golds)
    token_lists = [normalize_answer(gold).split() for gold in golds]
    return [tokens for tokens in token_lists if tokens]


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    width = len(needle)
    return any(haystack[start : start + width] == needle for start in range(len(haystack) - width + 1))


def in_accuracy(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when any gold answer appears, on token boundaries, inside the prediction; else 0.0."""
    predicted = normalize_answer(prediction).split()
    return float(any(_contains_run(predicted, gold) for gold in _gold_token_lists(golds)))


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer; else 0.0."""
    predicted = normalize_answer(prediction).split()
    return float(any(predicted == gold for gold in _gold_token_lists(golds)))


def _f1(predicted: list[str], gold: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best SQuAD token-overlap F1 between the prediction and any gold answer."""
    predicted = normalize_answer(prediction).split()
    return max((_f1(predicted, gold) for gold in _gold_token_lists(golds)), default=0.0)


def score_output(
    output: str, golds: Sequence[str], *, metric: RewardName, extraction: Extraction
) -> float:
    """Score a raw model output: extract the answer part, then apply the metric."""
    _require_golds(golds)
    scorer = {"in_acc": in_accuracy, "em": exact_match, "f1": token_f1}[check_reward_name(metric)]
    answer = extract_answer(output, extraction)
    return 0.0 if answer is None else scorer(answer, golds)


def binary_reward(
    output: str,
    golds: Sequence[str],
    *,
    reward: RewardName,
    extraction: Extraction,
    f1_threshold: float = 0.5,
) -> int:
    """Turn a metric score into the 0/1 reward that STaSC's filter needs."""
    if not 0.0 < f1_threshold <= 1.0:
        raise StascError(f"f1_threshold must be in (0, 1], got {f1_threshold}.")
    score = score_output(output, golds, metric=reward, extraction=extraction)
    if reward == "f1":
        return int(score >= f1_threshold)
    return int(score == 1.0)

"""STaSC's rewards (in_acc, em, f1) as an `evaluate` metric; the scoring is stasc.core.rewards itself."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate

from stasc.core.rewards import binary_reward, check_extraction, score_output

_CITATION = """\
@article{moskvoretskii2025stasc,
  title   = {Self-Taught Self-Correction for Small Language Models},
  author  = {Moskvoretskii, Viktor and Biemann, Chris and Nikishina, Irina},
  journal = {arXiv preprint arXiv:2503.08681},
  year    = {2025}
}
"""

_DESCRIPTION = """\
The rewards that STaSC (Self-Taught Self-Correction) trains and evaluates with, for open-domain question
answering. Text is normalised SQuAD-style (compatibility forms, accents, zero-width characters, case,
punctuation and the articles a/an/the do not count).
in_acc is 1 when the tokens of any reference answer occur as a contiguous run in the prediction, em when the
prediction equals a reference, f1 when the best token F1 with a reference reaches f1_threshold. Each score is
the mean over the predictions of that 0/1 reward; token_f1 is the mean token F1 itself.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): model outputs, one per question.
    references (`list` of `list` of `str`, or `list` of `str`): the reference answers of each question
        (any one of them counts as right).
    answer_extraction (`str`, default "full"): what is scored: "full", the whole output, or "final_answer",
        only the text after "Final Answer:" (an output without that line scores 0).
    f1_threshold (`float`, default 0.5): token F1 at or above which the f1 reward is 1.
Returns:
    in_acc (`float`): share of predictions that contain a reference answer.
    em (`float`): share of predictions that equal a reference answer.
    f1 (`float`): share of predictions whose token F1 reaches f1_threshold.
    token_f1 (`float`): mean best token F1.
Examples:
    >>> rewards = evaluate.load("ORG/NAME")  # the metric Space, or this file's folder
    >>> rewards.compute(predictions=["It is Paris."], references=[["Paris"]])
    {'in_acc': 1.0, 'em': 0.0, 'f1': 1.0, 'token_f1': 0.5}
    >>> rewards.compute(predictions=["Lyon? No.\\nFinal Answer: Paris"], references=[["Paris"]],
    ...                 answer_extraction="final_answer")
    {'in_acc': 1.0, 'em': 1.0, 'f1': 1.0, 'token_f1': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class StascRewards(evaluate.Metric):
    """in_acc, em and f1 as STaSC computes them, averaged over the predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://arxiv.org/abs/2503.08681"],
            reference_urls=["https://arxiv.org/abs/2503.08681", "https://rajpurkar.github.io/SQuAD-explorer/"],
            license="apache-2.0",
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str] | str],
        answer_extraction: str = "full",
        f1_threshold: float = 0.5,
    ) -> dict[str, float]:
        extraction = check_extraction(answer_extraction)
        totals = {"in_acc": 0.0, "em": 0.0, "f1": 0.0, "token_f1": 0.0}
        for index, (prediction, golds) in enumerate(zip(predictions, references, strict=True)):
            golds = [golds] if isinstance(golds, str) else list(golds)
            if not golds:
                raise ValueError(f"references[{index}] is empty: give each prediction at least one reference answer.")
            for reward in ("in_acc", "em", "f1"):
                totals[reward] += binary_reward(
                    prediction, golds, reward=reward, extraction=extraction, f1_threshold=f1_threshold
                )
            totals["token_f1"] += score_output(prediction, golds, metric="f1", extraction=extraction)
        count = max(len(predictions), 1)
        return {name: total / count for name, total in totals.items()}

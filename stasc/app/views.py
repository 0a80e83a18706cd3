"""How the app shows things: verdicts on answers, what an iteration's corrections do, metric tables, and
tables as HTML that fits a desktop window and a phone.

Answers are scored with the run's own answer extraction and in-accuracy, so a verdict here is the
one the run's evaluation would give. Run manifests name metrics acc_t1, acc_t2, delta, i_to_c and c_to_i
with 95% intervals, and runs evaluated with several correction rounds (--eval-rounds R > 1) also acc_t3 ..
acc_t{R+1}; older runs have only initial_in_acc, correction_in_acc and the transition rates under their long
names, and no intervals: all are shown.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stasc.core.metrics import ALIASES
from stasc.core.rewards import extract_answer, score_output

PENDING = "…"
HEADLINE_LABELS = {"acc_t1": "acc_t1", "acc_t2": "acc_t2", "delta": "delta", "i_to_c": "i→c", "c_to_i": "c→i"}
ACCURACY_LABELS = {"acc_t1": "initial answer (acc_t1)", "acc_t2": "self-correction (acc_t2)"}
TRANSITION_LABELS = {
    "c_to_c": "correct → correct",
    "c_to_i": "correct → incorrect",
    "i_to_c": "incorrect → correct",
    "i_to_i": "incorrect → incorrect",
}
ROUND_ACCURACY = re.compile(r"acc_t([3-9]|[1-9]\d+)")  # acc_t3, acc_t4 ...: the accuracy after each later round


def final_answer(text: str) -> str | None:
    """The text after 'Final Answer:', where the run's instructions ask the model to put its answer."""
    return extract_answer(text, "final_answer")


def _code(text: str) -> str:
    shown = " ".join(text.split()).replace("`", "'")
    return f"`{shown}`" if shown else "*(empty)*"


def is_correct(text: str, references: Sequence[str], extraction: str) -> bool | None:
    """Scored as the run's evaluation scores it: in-accuracy on the run's answer extraction; None without references."""
    if not references:
        return None
    return score_output(text, list(references), metric="in_acc", extraction=extraction) == 1.0  # type: ignore[arg-type]


def _mark(correct: bool | None) -> str:
    return "" if correct is None else (" **✓ correct**" if correct else " **✗ incorrect**")


def verdict(text: str, references: Sequence[str], extraction: str) -> str:
    """The final answer set apart, and whether it is correct when references are given.

    A reply without a "Final Answer:" line is the model's normal behaviour, not a mistake: it gets a
    neutral note saying what the run grades instead (the whole reply, or nothing under 'final_answer').
    """
    answer = final_answer(text)
    mark = _mark(is_correct(text, references, extraction))
    if answer is not None:
        return f"**Final answer:** {_code(answer)}{mark}"
    graded = "whole reply graded" if extraction == "full" else "graded as no answer (the run reads only that line)"
    return f"*No Final Answer line; {graded}.*{mark}"


def transition_summary(initial: str, correction: str, references: Sequence[str], extraction: str) -> str:
    """One line on what the self-correction did."""
    first, second = is_correct(initial, references, extraction), is_correct(correction, references, extraction)
    if first is None or second is None:
        before, after = (final_answer(text) or text for text in (initial, correction))
        same = before.strip().lower() == after.strip().lower()
        change = "kept the same answer" if same else "changed the answer"
        return f"The self-correction {change}. Add reference answers to see which one is correct."
    outcome = {
        (False, True): "**✗ → ✓** The self-correction fixed a wrong answer.",
        (True, True): "**✓ → ✓** The answer was right and stayed right.",
        (True, False): "**✓ → ✗** The self-correction broke a right answer.",
        (False, False): "**✗ → ✗** The answer was wrong and is still wrong.",
    }
    return outcome[(first, second)]


# Metrics of a run's iterations


def metric_values(entry: Mapping[str, Any]) -> dict[str, float]:
    """acc_t1, acc_t2, delta, i_to_c, c_to_i, c_to_c, i_to_i of a manifest entry, from the older names when the
    run predates them (delta is then acc_t2 - acc_t1)."""
    metrics = {ALIASES.get(name, name): value for name, value in entry["metrics"].items()}
    metrics.update({name: value for name, value in entry["metrics"].items() if name in HEADLINE_LABELS})
    values = {name: float(metrics.get(name, 0.0)) for name in (*HEADLINE_LABELS, "c_to_c", "i_to_i")}
    if "delta" not in metrics:
        values["delta"] = values["acc_t2"] - values["acc_t1"]
    values.update({name: float(value) for name, value in metrics.items() if ROUND_ACCURACY.fullmatch(name)})
    return values


def round_accuracies(iterations: Sequence[Mapping[str, Any]]) -> list[str]:
    """acc_t3, acc_t4 ... that a run's iterations report (none unless it was evaluated with R > 1), in turn order."""
    names = {name for entry in iterations for name in entry["metrics"] if ROUND_ACCURACY.fullmatch(name)}
    return sorted(names, key=lambda name: int(name.removeprefix("acc_t")))


def accuracy_labels(iterations: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The accuracy curves of a run's plot: the initial answers, the correction, and each later round."""
    later = {name: f"correction round {int(name.removeprefix('acc_t')) - 1} ({name})"
             for name in round_accuracies(iterations)}
    return {**ACCURACY_LABELS, **later}


def _table_labels(iterations: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The table's metric columns: the headline ones, with the later rounds' accuracies after acc_t2."""
    names = list(HEADLINE_LABELS)
    later = round_accuracies(iterations)
    return {name: HEADLINE_LABELS.get(name, name) for name in [*names[:2], *later, *names[2:]]}


def metric_intervals(entry: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """The 95% intervals a manifest entry carries ({} for runs that predate them), well-formed ones only."""
    found = entry.get("intervals")
    if not isinstance(found, Mapping):
        return {}
    return {
        name: (float(bounds[0]), float(bounds[1]))
        for name, bounds in found.items()
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2
        and all(isinstance(bound, (int, float)) for bound in bounds)
    }


def _percent(value: float, signed: bool = False) -> str:
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def _share(name: str, values: Mapping[str, float], intervals: Mapping[str, tuple[float, float]]) -> str:
    signed = name == "delta"
    shown = _percent(values[name], signed)
    if name in intervals:
        low, high = intervals[name]
        shown += f" (95% interval {_percent(low, signed)} to {_percent(high, signed)})"
    return shown


def correction_line(entry: Mapping[str, Any]) -> str:
    """What an iteration's self-corrections do to its answers on the test set, in one line, saying so plainly
    when they fix nothing (then a changed answer in the app is not a correction the model learned)."""
    values, intervals = metric_values(entry), metric_intervals(entry)
    iteration = entry["iteration"]
    who = "The base model (iteration 0)" if iteration == 0 else f"Iteration {iteration}"
    broke = _share("c_to_i", values, intervals)
    if values["i_to_c"] == 0:
        return (
            f"**{who} fixes nothing on the test set:** its self-corrections turned no wrong answer right, and broke "
            f"{broke} of answers. A changed answer here is not a correction it learned."
        )
    return (
        f"**{who}** on the test set: its self-corrections fixed {_share('i_to_c', values, intervals)} of answers "
        f"and broke {broke}; net change {_share('delta', values, intervals)}."
    )


def metrics_table(iterations: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per iteration: kept examples and the headline metrics (with acc_t3 .. when present), rounded."""
    labels = _table_labels(iterations)
    rows = []
    for entry in iterations:
        values = metric_values(entry)
        kept = entry.get("kept_examples")
        rows.append([
            entry["iteration"], "-" if kept is None else str(kept),
            *(round(values.get(name, float("nan")), 3) for name in labels),
        ])
    return pd.DataFrame(rows, columns=["iteration", "kept", *labels.values()])


def metrics_html(iterations: Sequence[Mapping[str, Any]]) -> str:
    """The metrics table with each value's 95% interval under it (when the run has them)."""
    table = metrics_table(iterations)
    notes = []
    for entry in iterations:
        intervals = metric_intervals(entry)
        notes.append({
            label: f"[{intervals[name][0]:+.2f}, {intervals[name][1]:+.2f}]" if name == "delta"
            else f"[{intervals[name][0]:.2f}, {intervals[name][1]:.2f}]"
            for name, label in _table_labels(iterations).items() if name in intervals
        })
    caption = "Per iteration, on the test set" + (" (95% intervals under each value)" if any(notes) else "")
    return html_table(table, notes=notes, caption=caption)


# Tables


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and conversations as readable text, since table cells show strings and numbers."""

    def cell(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, dict):
            if "role" in value and "content" in value:
                return f"[{value['role']}] {value['content']}"
            return json.dumps(value, ensure_ascii=False, default=str)
        if isinstance(value, (list, tuple)):
            parts = [cell(item) for item in value]
            separator = "\n" if any(isinstance(item, dict) for item in value) else "; "
            return separator.join(str(part) for part in parts)
        return value

    return frame.apply(lambda column: column.map(cell)) if len(frame) else frame


def html_table(frame: pd.DataFrame, *, notes: Sequence[Mapping[str, str]] | None = None, caption: str = "") -> str:
    """A table that wraps its text to the window, and on a narrow screen (a phone) shows each row as a card of
    label: value lines, so no column is ever cut off (the CSS is stasc.app.ui.CSS). Cells are escaped: they hold
    model output. `notes[row][column]` is a small line under a cell (e.g. its interval)."""
    if frame.empty:
        return ""
    columns = [str(column) for column in frame.columns]
    head = "".join(f"<th scope='col'>{html.escape(column)}</th>" for column in columns)
    body = []
    for position, row in enumerate(frame.itertuples(index=False)):
        extra = notes[position] if notes else {}
        cells = []
        for column, value in zip(columns, row, strict=True):
            text = html.escape("" if value is None else str(value))
            note = f"<br><small>{html.escape(extra[column])}</small>" if column in extra else ""
            cells.append(f"<td data-label='{html.escape(column, quote=True)}'>{text}{note}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f"<div class='stasc-table-wrap'><table class='stasc-table'>{title}<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )

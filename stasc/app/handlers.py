"""What the app does, apart from its layout: every button's work as a plain method, testable directly.

Prompts are built with stasc.core.prompts from the run's own instructions, exactly as in training and
evaluation, and answers are scored with the run's answer extraction, so what a visitor sees is
what the run's metrics measure. Errors reach the visitor as gr.Error with a message that says
what to do; anything unexpected is logged and reported without a stack trace.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import gradio as gr
import numpy as np
import pandas as pd

from stasc.app.catalog import Catalog, ModelTarget, RunView
from stasc.app.engine import Engine
from stasc.sampling.cpu_engine.decoding import DecodeSettings
from stasc.errors import StascError
from stasc.run.manifest import TRANSITIONS
from stasc.modeling.models import BUNDLED_NAME
from stasc.core.prompts import Message, correction_messages, initial_messages
from stasc.core.rewards import extract_answer, score_output
from stasc.hub.sources import load_evaluation

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 500
MAX_REFERENCES_CHARS = 300
MAX_MESSAGE_CHARS = 500
MAX_HISTORY_MESSAGES = 40
MAX_HISTORY_MESSAGE_CHARS = 6000  # a reply of 512 new tokens is far shorter; anything longer was not made here
TEMPERATURE_RANGE = (0.0, 1.5)
NEW_TOKENS_RANGE = (8, 512)
MAX_TABLE_ROWS = 500
CORRECTION_TITLE = "Self-correction"
ACCURACY_LABELS = {"initial_in_acc": "initial answer", "correction_in_acc": "self-correction"}
TRANSITION_LABELS = {
    "correct_to_correct": "correct → correct",
    "correct_to_incorrect": "correct → incorrect",
    "incorrect_to_correct": "incorrect → correct",
    "incorrect_to_incorrect": "incorrect → incorrect",
}
DATA_KINDS = {
    "evaluation": "Evaluation: one answer and one correction per held-out question",
    "train_data": "Training data: the corrections the filter kept",
    "corrections": "All sampled corrections, with the filter's decision",
    "initial_answers": "All sampled initial answers",
}
PENDING = "…"

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(function: F) -> F:
    """Turn StascError into gr.Error, and anything unexpected into a logged, trace-free gr.Error."""

    def translate(error: Exception) -> gr.Error:
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, StascError):
            return gr.Error(str(error), print_exception=False)
        logger.exception("Unexpected error in %s", function.__name__)
        return gr.Error(
            f"Something went wrong ({type(error).__name__}). Try again; if it persists, the server log has "
            "the details.",
            print_exception=False,
        )

    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from function(*args, **kwargs)
            except Exception as error:
                raise translate(error) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(function)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:
            raise translate(error) from None

    return plain  # type: ignore[return-value]


class ComparePanel(NamedTuple):
    """The Compare tab's outputs: both answers, each with its final answer set apart, and the verdict."""

    initial: str
    initial_final: str
    correction: str
    correction_final: str
    summary: str


class IterationPair(NamedTuple):
    """Two iterations on one question: each side's answer, correction and verdicts."""

    initial_a: str
    correction_a: str
    summary_a: str
    initial_b: str
    correction_b: str
    summary_b: str


class MetricsView(NamedTuple):
    summary: str
    accuracy: pd.DataFrame
    transitions: pd.DataFrame
    table: pd.DataFrame


class SourceView(NamedTuple):
    """What changes when another run is picked."""

    iterations: list[tuple[str, int]]
    latest: int
    info: str
    temperature: float
    max_new_tokens: int


def check_text(value: Any, what: str, limit: int, *, required: bool = True) -> str:
    """Stripped text within the length limit, or an error saying how to fix it."""
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise StascError(f"Type a {what} first.")
    if len(text) > limit:
        raise StascError(f"The {what} is {len(text)} characters long; the limit is {limit}. Shorten it.")
    return text


def parse_references(value: Any) -> list[str]:
    """Reference answers separated by ';' (commas occur inside answers, e.g. 'Washington, D.C.')."""
    text = check_text(value, "reference answers", MAX_REFERENCES_CHARS, required=False)
    return [part.strip() for part in text.split(";") if part.strip()]


def final_answer(text: str) -> str | None:
    """The text after 'Final Answer:', where the run's instructions ask the model to put its answer."""
    return extract_answer(text, "final_answer")


def _code(text: str) -> str:
    shown = " ".join(text.split()).replace("`", "'")
    return f"`{shown}`" if shown else "*(empty)*"


def _correct(text: str, references: Sequence[str], extraction: str) -> bool | None:
    """Scored as the run's evaluation scores it: in-accuracy on the run's answer extraction."""
    if not references:
        return None
    return score_output(text, list(references), metric="in_acc", extraction=extraction) == 1.0  # type: ignore[arg-type]


def _mark(correct: bool | None) -> str:
    return "" if correct is None else (" **✓ correct**" if correct else " **✗ incorrect**")


def verdict(text: str, references: Sequence[str], extraction: str) -> str:
    """The final answer set apart, and whether it is correct when references are given."""
    answer = final_answer(text)
    if answer is None:
        lines = [line for line in text.splitlines() if line.strip()]
        label, answer = "No “Final Answer:” line; last line", lines[-1] if lines else ""
    else:
        label = "Final answer"
    return f"**{label}:** {_code(answer)}{_mark(_correct(text, references, extraction))}"


def transition_summary(initial: str, correction: str, references: Sequence[str], extraction: str) -> str:
    """One line on what the self-correction did."""
    first, second = _correct(initial, references, extraction), _correct(correction, references, extraction)
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


def _content_text(content: Any) -> str:
    """Text of a chat message, whether Gradio sent a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    if isinstance(content, list):
        return "".join(_content_text(part) for part in content)
    raise StascError("The chat history holds something other than text. Press Clear and start again.")


def normalize_history(history: Any) -> list[dict[str, Any]]:
    """The chat as a list of {role, content[, metadata]} with text content, checked."""
    messages: list[dict[str, Any]] = []
    for item in history or []:
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ("user", "assistant"):
            raise StascError("The chat history is not a conversation. Press Clear and start again.")
        message: dict[str, Any] = {"role": role, "content": _content_text(item.get("content", ""))}
        if len(message["content"]) > MAX_HISTORY_MESSAGE_CHARS:
            raise StascError(
                f"The chat history holds a message over {MAX_HISTORY_MESSAGE_CHARS} characters. Press Clear and "
                "start again."
            )
        title = (item.get("metadata") or {}).get("title")
        if role == "assistant" and title == CORRECTION_TITLE:
            message["metadata"] = {"title": CORRECTION_TITLE}
        messages.append(message)
    return messages


def model_conversation(
    history: Sequence[dict[str, Any]], instructions: str, correction_instructions: str, use_instructions: bool
) -> list[Message]:
    """What the model sees for a displayed chat: the first question wrapped in the run's instructions (as in
    training), and each self-correction preceded by the correction request that produced it."""
    conversation: list[Message] = []
    for position, message in enumerate(history):
        text = message["content"]
        if message["role"] == "user":
            if position == 0 and use_instructions:
                conversation.extend(initial_messages(text, instructions))
            else:
                conversation.append({"role": "user", "content": text})
        else:
            if (message.get("metadata") or {}).get("title") == CORRECTION_TITLE:
                conversation.append({"role": "user", "content": correction_instructions})
            conversation.append({"role": "assistant", "content": text})
    return conversation


def builtin_examples(limit: int = 8) -> list[list[str]]:
    """(question, references) from the built-in test split: questions no run trained on."""
    from stasc.data import load_qa_splits

    try:
        _, test = load_qa_splits("builtin")
    except (StascError, ValueError, OSError) as error:
        logger.warning("No example questions: the built-in QA set could not be read (%s)", error)
        return []
    return [[example.question, "; ".join(example.answers)] for example in test[:limit]]


class Handlers:
    """The app's actions over a catalogue of runs and one model engine."""

    def __init__(
        self, catalog: Catalog, engine: Engine, *, dtype: str | None = None, allow_remote_code: bool = False
    ) -> None:
        self.catalog = catalog
        self.engine = engine
        self.dtype = dtype
        self.allow_remote_code = allow_remote_code

    # Picking a run and an iteration

    @user_errors
    def refresh(self) -> list[tuple[str, str]]:
        """Rescan the runs directory; the run choices afterwards."""
        self.catalog.refresh()
        return self.catalog.choices()

    @user_errors
    def select_source(self, key: str) -> SourceView:
        view = self.catalog.view(key)
        low_t, high_t = TEMPERATURE_RANGE
        low_n, high_n = NEW_TOKENS_RANGE
        return SourceView(
            iterations=self._iteration_choices(view),
            latest=view.latest,
            info=self._info(view, view.latest),
            temperature=min(max(float(view.config.get("temperature", 0.6)), low_t), high_t),
            max_new_tokens=min(max(int(view.config.get("max_new_tokens", 64)), low_n), high_n),
        )

    @user_errors
    def run_info(self, key: str, iteration: Any) -> str:
        view = self.catalog.view(key)
        return self._info(view, view.check_iteration(iteration))

    @staticmethod
    def _iteration_choices(view: RunView) -> list[tuple[str, int]]:
        if not view.iterations:
            return [("0 · base model", 0)]
        choices = []
        for entry in view.iterations:
            metrics = entry["metrics"]
            name = "base model" if entry["iteration"] == 0 else f"iteration {entry['iteration']}"
            label = (
                f"{entry['iteration']} · {name} (initial {metrics['initial_in_acc']:.2f} → "
                f"correction {metrics['correction_in_acc']:.2f})"
            )
            choices.append((label, entry["iteration"]))
        return choices

    @staticmethod
    def _info(view: RunView, iteration: int) -> str:
        if view.manifest is None:
            return (
                f"**{BUNDLED_NAME}**, the bundled base model, before any STaSC training (iteration 0). "
                "Train a run with `python train.py`, then press **Refresh runs** to compare its iterations."
            )
        manifest, config = view.manifest, view.config
        lines = [
            f"**{view.choice.label}** · variant {manifest.get('variant', '?')} · base model `{config['model']}` · "
            f"data `{config.get('dataset')}` · iterations 0–{view.latest} ({manifest.get('status', 'unknown')})"
        ]
        entry = view.iterations[iteration]
        metrics = entry["metrics"]
        what = "the base model" if iteration == 0 else f"iteration {iteration}"
        kept = entry.get("kept_examples")
        lines.append(
            f"Held-out in-accuracy of {what}: initial answers **{metrics['initial_in_acc']:.3f}**, "
            f"self-corrections **{metrics['correction_in_acc']:.3f}**"
            + (f"; trained on {kept} kept corrections." if kept is not None else ".")
        )
        return "\n\n".join(lines)

    # Answering

    def _prepare(
        self, key: str, iteration: Any, temperature: Any, max_new_tokens: Any
    ) -> tuple[RunView, ModelTarget, DecodeSettings]:
        view = self.catalog.view(key)
        target = view.target(iteration, dtype=self.dtype, allow_remote_code=self.allow_remote_code)
        return view, target, self._sampling(view, temperature, max_new_tokens)

    @staticmethod
    def _sampling(view: RunView, temperature: Any, max_new_tokens: Any) -> DecodeSettings:
        low_t, high_t = TEMPERATURE_RANGE
        low_n, high_n = NEW_TOKENS_RANGE
        try:
            value_t = float(view.config.get("temperature", 0.6) if temperature is None else temperature)
            value_n = int(view.config.get("max_new_tokens", 64) if max_new_tokens is None else max_new_tokens)
        except (TypeError, ValueError):
            raise StascError("Temperature and max new tokens must be numbers.") from None
        if not low_t <= value_t <= high_t:
            raise StascError(f"Temperature must be between {low_t} and {high_t} (got {value_t}).")
        if not low_n <= value_n <= high_n:
            raise StascError(f"Max new tokens must be between {low_n} and {high_n} (got {value_n}).")
        return DecodeSettings(temperature=value_t, top_p=float(view.config.get("top_p", 0.9)), max_new_tokens=value_n)

    def _self_correct(
        self, view: RunView, target: ModelTarget, question: str, sampling: DecodeSettings
    ) -> Iterator[tuple[str, str, bool]]:
        """(initial, correction, done) as both stream: the answer first, then its correction."""
        config = view.config
        initial = ""
        for initial in self.engine.stream(target, initial_messages(question, config["instructions"]), sampling):
            yield initial, "", False
        prompt = correction_messages(question, initial, config["instructions"], config["correction_instructions"])
        correction = ""
        for correction in self.engine.stream(target, prompt, sampling):
            yield initial, correction, False
        yield initial, correction, True

    @user_errors
    def compare(
        self, key: str, iteration: Any, question: Any, references: Any, temperature: Any = None,
        max_new_tokens: Any = None,
    ) -> Iterator[ComparePanel]:
        """The initial answer and its self-correction, streamed side by side."""
        question = check_text(question, "question", MAX_QUESTION_CHARS)
        golds = parse_references(references)
        view, target, sampling = self._prepare(key, iteration, temperature, max_new_tokens)
        extraction = str(view.config.get("answer_extraction", "full"))
        initial_final = PENDING
        for initial, correction, done in self._self_correct(view, target, question, sampling):
            if correction and initial_final == PENDING:
                initial_final = verdict(initial, golds, extraction)
            if not done:
                yield ComparePanel(initial, initial_final, correction, PENDING, PENDING)
                continue
            yield ComparePanel(
                initial,
                verdict(initial, golds, extraction),
                correction,
                verdict(correction, golds, extraction),
                transition_summary(initial, correction, golds, extraction),
            )

    @user_errors
    def compare_iterations(
        self, key: str, iteration_a: Any, iteration_b: Any, question: Any, references: Any,
        temperature: Any = None, max_new_tokens: Any = None,
    ) -> Iterator[IterationPair]:
        """The same question through two iterations (e.g. the base model and the latest), one after the other."""
        question = check_text(question, "question", MAX_QUESTION_CHARS)
        golds = parse_references(references)
        view, target_a, sampling = self._prepare(key, iteration_a, temperature, max_new_tokens)
        _, target_b, _ = self._prepare(key, iteration_b, temperature, max_new_tokens)
        extraction = str(view.config.get("answer_extraction", "full"))

        def summary(initial: str, correction: str) -> str:
            return (
                f"Initial: {verdict(initial, golds, extraction)}\n\n"
                f"Correction: {verdict(correction, golds, extraction)}"
                f"\n\n{transition_summary(initial, correction, golds, extraction)}"
            )

        side_a = ("", "", PENDING)
        for initial, correction, done in self._self_correct(view, target_a, question, sampling):
            side_a = (initial, correction, summary(initial, correction) if done else PENDING)
            yield IterationPair(*side_a, "", "", PENDING)
        for initial, correction, done in self._self_correct(view, target_b, question, sampling):
            yield IterationPair(*side_a, initial, correction, summary(initial, correction) if done else PENDING)

    # Chatting

    @user_errors
    def chat(
        self, key: str, iteration: Any, message: Any, history: Any, self_correct: bool = True,
        use_instructions: bool = True, temperature: Any = None, max_new_tokens: Any = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Reply to a message, then (if asked) follow the reply with the model's self-correction of it."""
        text = check_text(message, "message", MAX_MESSAGE_CHARS)
        shown = normalize_history(history)
        if len(shown) + 3 > MAX_HISTORY_MESSAGES:
            raise StascError(f"This chat reached {MAX_HISTORY_MESSAGES} messages. Press Clear to start a new one.")
        view, target, sampling = self._prepare(key, iteration, temperature, max_new_tokens)
        shown.append({"role": "user", "content": text})
        yield from self._reply(view, target, shown, sampling, use_instructions, correction=False)
        if self_correct:
            yield from self._reply(view, target, shown, sampling, use_instructions, correction=True)

    @user_errors
    def correct_last(
        self, key: str, iteration: Any, history: Any, use_instructions: bool = True, temperature: Any = None,
        max_new_tokens: Any = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Ask the model to correct its last reply."""
        shown = normalize_history(history)
        if not shown or shown[-1]["role"] != "assistant":
            raise StascError("There is no reply to correct yet: send a message first.")
        if len(shown) + 1 > MAX_HISTORY_MESSAGES:
            raise StascError(f"This chat reached {MAX_HISTORY_MESSAGES} messages. Press Clear to start a new one.")
        view, target, sampling = self._prepare(key, iteration, temperature, max_new_tokens)
        yield from self._reply(view, target, shown, sampling, use_instructions, correction=True)

    def _reply(
        self, view: RunView, target: ModelTarget, shown: list[dict[str, Any]], sampling: DecodeSettings,
        use_instructions: bool, *, correction: bool,
    ) -> Iterator[list[dict[str, Any]]]:
        config = view.config
        conversation = model_conversation(
            shown, config["instructions"], config["correction_instructions"], use_instructions
        )
        if correction:
            conversation.append({"role": "user", "content": config["correction_instructions"]})
        reply: dict[str, Any] = {"role": "assistant", "content": ""}
        if correction:
            reply["metadata"] = {"title": CORRECTION_TITLE}
        shown.append(reply)
        for text in self.engine.stream(target, conversation, sampling):
            reply["content"] = text
            yield [dict(message) for message in shown]

    # How the run went

    @user_errors
    def metrics(self, key: str) -> MetricsView:
        """In-accuracy of initial answers and corrections, and the transition rates, per iteration."""
        view = self.catalog.view(key)
        # Iterations as zero-padded labels: a numeric axis would show fractional iterations between them.
        width = len(str(view.latest))
        accuracy = pd.DataFrame(
            [
                {
                    "iteration": f"{entry['iteration']:0{width}d}", "answers": label,
                    "in-accuracy": float(entry["metrics"][name]),
                }
                for entry in view.iterations
                for name, label in ACCURACY_LABELS.items()
            ],
            columns=["iteration", "answers", "in-accuracy"],
        )
        transitions = pd.DataFrame(
            [
                {
                    "iteration": f"{entry['iteration']:0{width}d}", "transition": label,
                    "rate": float(entry["metrics"].get(name, 0.0)),
                }
                for entry in view.iterations
                for name, label in TRANSITION_LABELS.items()
            ],
            columns=["iteration", "transition", "rate"],
        )
        columns = ["iteration", "kept examples", "initial in-acc", "correction in-acc", "correction − initial",
                   *TRANSITION_LABELS.values()]
        rows = []
        for entry in view.iterations:
            metrics = entry["metrics"]
            kept = entry.get("kept_examples")
            rows.append(
                [
                    entry["iteration"],
                    "-" if kept is None else str(kept),
                    round(metrics["initial_in_acc"], 3),
                    round(metrics["correction_in_acc"], 3),
                    round(metrics["correction_in_acc"] - metrics["initial_in_acc"], 3),
                    *(round(float(metrics.get(name, 0.0)), 3) for name in TRANSITIONS),
                ]
            )
        table = pd.DataFrame(rows, columns=columns)
        return MetricsView(self._metrics_summary(view), accuracy, transitions, table)

    @staticmethod
    def _metrics_summary(view: RunView) -> str:
        if not view.iterations:
            return (
                "No metrics yet: the bundled base model has not been trained. Run `python train.py` and press "
                "**Refresh runs**."
            )
        first, last = view.iterations[0]["metrics"], view.iterations[-1]["metrics"]
        gap = last["correction_in_acc"] - last["initial_in_acc"]
        return (
            f"Held-out in-accuracy from iteration 0 to {view.latest}: initial answers "
            f"{first['initial_in_acc']:.3f} → {last['initial_in_acc']:.3f}, self-corrections "
            f"{first['correction_in_acc']:.3f} → {last['correction_in_acc']:.3f}. At iteration {view.latest} "
            f"self-correction {'gains' if gap >= 0 else 'loses'} {abs(gap):.3f} over the initial answers."
        )

    @user_errors
    def data(self, key: str, iteration: Any, kind: str) -> tuple[str, pd.DataFrame]:
        """One of an iteration's tables, with a line on what it holds."""
        if kind not in DATA_KINDS:
            raise StascError(f"Pick a table: {', '.join(DATA_KINDS)}.")
        view = self.catalog.view(key)
        iteration = view.check_iteration(iteration)
        if view.choice.source is None:
            return "The bundled base model has no run data: train a run with `python train.py`.", pd.DataFrame()
        frame = load_evaluation(view.choice.source, iteration, kind)
        if frame.empty:
            why = (
                "Iteration 0 is the base model: it is only evaluated, not trained."
                if iteration == 0 and kind != "evaluation"
                else "This table is empty for this iteration."
            )
            return why, pd.DataFrame()
        shown = min(len(frame), MAX_TABLE_ROWS)
        note = f"{DATA_KINDS[kind]}, iteration {iteration}: {len(frame)} rows"
        note += f" (showing the first {shown})." if shown < len(frame) else "."
        return note, display_table(frame.head(shown))

"""What the app does, apart from its layout: every button's work as a plain method, testable directly.

Prompts are built with stasc.core.prompts from the run's own instructions, exactly as in training and
evaluation, answers are drawn by the loop's sampler (stasc.app.engine) and scored with the run's answer
extraction, so what a visitor sees is what the run's metrics measure. Errors reach the visitor as
gr.Error with a message that says what to do; anything unexpected is logged and reported without a
stack trace.

Each generating action has two forms: the API's (compare, compare_iterations, chat, correct_last: the
history comes from the caller) and the page's (*_view, chat_turn, correct_turn), which label every answer
with the question and iteration it belongs to and read the chat from the session's own copy when the
action runs, so actions queued behind one another never answer under the wrong question.

A run evaluated with several correction rounds (--eval-rounds R > 1) is compared round by round: the page and
the compare_rounds endpoint also stream corrections 2..R, each of the one before, prompted as the loop's
evaluation prompts them, so that what a visitor sees is what acc_t3 .. measure.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import gradio as gr
import pandas as pd

from stasc.app.catalog import Catalog, ModelTarget, RunView
from stasc.app.conversation import (
    CORRECTION_TITLE,
    MAX_HISTORY_MESSAGES,
    MAX_MESSAGE_CHARS,
    MAX_QUESTION_CHARS,
    check_text,
    model_conversation,
    normalize_history,
    parse_references,
)
from stasc.app.engine import Engine
from stasc.app.views import (
    PENDING,
    TRANSITION_LABELS,
    accuracy_labels,
    correction_line,
    display_table,
    html_table,
    metric_values,
    metrics_html,
    metrics_table,
    round_accuracies,
    transition_summary,
    verdict,
)
from stasc.core.prompts import initial_messages, refinement_messages
from stasc.errors import StascError
from stasc.hub.sources import load_evaluation
from stasc.modeling.models import BUNDLED_NAME
from stasc.sampling.cpu_engine.decoding import DecodeSettings

logger = logging.getLogger(__name__)

TEMPERATURE_RANGE = (0.0, 1.5)
NEW_TOKENS_RANGE = (8, 512)
SEED_RANGE = (0, 2**31 - 1)
MAX_TABLE_ROWS = 500
# Corrections after the first that Compare shows (Gradio needs a fixed number of outputs); a run evaluated with
# more rounds is shown up to round 1 + MAX_EXTRA_ROUNDS, and the page says so.
MAX_EXTRA_ROUNDS = 4
DATA_KINDS = {
    "evaluation": "Evaluation: answers and their corrections on the held-out questions",
    "train_data": "Training data: the corrections the filter kept",
    "corrections": "All sampled corrections, with the filter's decision",
    "initial_answers": "All sampled initial answers",
}

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
    rounds: int  # the run's correction rounds at evaluation (eval_rounds)
    rounds_note: str  # what Compare shows of them ("" for one round)


class ChatTurn(NamedTuple):
    """The chat page's outputs: the conversation (shown, and kept as the session's copy), the message box, and
    which iteration wrote the last reply."""

    shown: list[dict[str, Any]]
    kept: list[dict[str, Any]]
    message: Any  # "" once the message is in the chat, then left alone (gr.skip()) so a visitor can type the next
    status: str


def builtin_examples(limit: int = 8) -> list[list[str]]:
    """(question, references) from the built-in test split: questions no run trained on."""
    from stasc.data import load_qa_splits

    try:
        _, test = load_qa_splits("builtin")
    except (StascError, ValueError, OSError) as error:
        logger.warning("No example questions: the built-in QA set could not be read (%s)", error)
        return []
    return [[example.question, "; ".join(example.answers)] for example in test[:limit]]


def iteration_name(iteration: int) -> str:
    return "iteration 0 (base model)" if iteration == 0 else f"iteration {iteration}"


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
        rounds = self._rounds(view)
        return SourceView(
            iterations=self._iteration_choices(view),
            latest=view.latest,
            info=self._info(view, view.latest),
            temperature=min(max(float(view.config.get("temperature", 0.6)), low_t), high_t),
            max_new_tokens=min(max(int(view.config.get("max_new_tokens", 64)), low_n), high_n),
            rounds=rounds,
            rounds_note=self._rounds_note(rounds),
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
            values = metric_values(entry)
            name = "base model" if entry["iteration"] == 0 else f"iteration {entry['iteration']}"
            label = (
                f"{entry['iteration']} · {name} (initial {values['acc_t1']:.2f} → correction {values['acc_t2']:.2f})"
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
        values = metric_values(entry)
        what = "the base model" if iteration == 0 else f"iteration {iteration}"
        kept = entry.get("kept_examples")
        lines.append(
            f"Held-out in-accuracy of {what}: initial answers **{values['acc_t1']:.3f}**, "
            f"self-corrections **{values['acc_t2']:.3f}**"
            + (f"; trained on {kept} kept corrections." if kept is not None else ".")
        )
        lines.append(correction_line(entry))
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

    @staticmethod
    def _seed(seed: Any) -> int:
        """The sampling seed: with the same seed, question and settings the app gives the loop's answer."""
        low, high = SEED_RANGE
        try:
            value = 0 if seed is None else int(seed)
        except (TypeError, ValueError):
            value = -1
        if isinstance(seed, float) and not seed.is_integer():
            value = -1
        if not low <= value <= high:
            raise StascError(f"The seed must be a whole number from {low} to {high} (got {seed!r}).")
        return value

    @staticmethod
    def _rounds(view: RunView) -> int:
        """How many correction rounds the run's evaluation drew (1 for runs that predate --eval-rounds)."""
        return max(int(view.config.get("eval_rounds", 1)), 1)

    @staticmethod
    def _rounds_note(rounds: int) -> str:
        """Above the answers: why more than one correction is shown, and that later rounds are cut."""
        if rounds == 1:
            return ""
        note = (
            f"This run was evaluated with **{rounds} correction rounds**: each correction corrects the one "
            "before it, prompted as in the run's evaluation."
        )
        if rounds > 1 + MAX_EXTRA_ROUNDS:
            note += f" The app shows the first {1 + MAX_EXTRA_ROUNDS}."
        return note

    def _self_correct(
        self, view: RunView, target: ModelTarget, question: str, sampling: DecodeSettings, seed: int,
        rounds: int = 1,
    ) -> Iterator[tuple[list[str], int]]:
        """(answers, turn) as they stream: the initial answer, then `rounds` corrections, each of the one before
        with the loop's prompt (refinement_messages); answers has rounds + 1 entries, "" until written, and turn
        is the one being written (rounds + 1 once all are done). Every turn uses the same seed."""
        config = view.config
        answers = [""] * (rounds + 1)
        prompt = initial_messages(question, config["instructions"])
        for turn in range(rounds + 1):
            for answers[turn] in self.engine.stream(target, prompt, sampling, seed):
                yield list(answers), turn
            prompt = refinement_messages(
                question, answers[: turn + 1], config["instructions"], config["correction_instructions"]
            )
        yield answers, rounds + 1

    def _compare(
        self, key: str, iteration: Any, question: Any, references: Any, temperature: Any, max_new_tokens: Any,
        seed: Any, *, extra_rounds: bool,
    ) -> Iterator[tuple[ComparePanel, list[str]]]:
        """The panel, and (with extra_rounds) each later round's (correction, verdict) flattened and padded to
        MAX_EXTRA_ROUNDS pairs: "" for rounds the run did not evaluate."""
        question = check_text(question, "question", MAX_QUESTION_CHARS)
        golds = parse_references(references)
        view, target, sampling = self._prepare(key, iteration, temperature, max_new_tokens)
        extraction = str(view.config.get("answer_extraction", "full"))
        rounds = min(self._rounds(view), 1 + MAX_EXTRA_ROUNDS) if extra_rounds else 1

        def shown(answers: list[str], turn: int, number: int) -> str:
            return verdict(answers[number], golds, extraction) if number < turn else PENDING

        def round_verdict(answers: list[str], turn: int, number: int) -> str:
            if number >= turn:
                return PENDING
            step = transition_summary(answers[number - 1], answers[number], golds, extraction)
            return f"{shown(answers, turn, number)}\n\n{step}"

        for answers, turn in self._self_correct(view, target, question, sampling, self._seed(seed), rounds):
            initial, correction = answers[:2]
            summary = transition_summary(initial, correction, golds, extraction) if turn > 1 else PENDING
            later: list[str] = []
            for number in range(2, rounds + 1):
                later += [answers[number], round_verdict(answers, turn, number)]
            later += [""] * (2 * (1 + MAX_EXTRA_ROUNDS - rounds) if extra_rounds else 0)
            yield ComparePanel(initial, shown(answers, turn, 0), correction, shown(answers, turn, 1), summary), later

    @user_errors
    def compare(
        self, key: str, iteration: Any, question: Any, references: Any, temperature: Any = None,
        max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[ComparePanel]:
        """The initial answer and its self-correction, streamed side by side."""
        for panel, _ in self._compare(
            key, iteration, question, references, temperature, max_new_tokens, seed, extra_rounds=False
        ):
            yield panel

    @user_errors
    def compare_rounds(
        self, key: str, iteration: Any, question: Any, references: Any, temperature: Any = None,
        max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[tuple[str, ...]]:
        """compare, then the later correction rounds of a run evaluated with R > 1, each with its verdict and
        what it did to the round before; the API's form of what the page shows."""
        for panel, later in self._compare(
            key, iteration, question, references, temperature, max_new_tokens, seed, extra_rounds=True
        ):
            yield (*panel, *later)

    @user_errors
    def compare_view(
        self, key: str, iteration: Any, question: Any, references: Any, temperature: Any = None,
        max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[tuple[str, ...]]:
        """compare for the page: every update also says which question and iteration its answers belong to."""
        label = self._answer_label(key, iteration, question)
        for outputs in self.compare_rounds(key, iteration, question, references, temperature, max_new_tokens, seed):
            yield (label, *outputs)

    def _answer_label(self, key: str, iteration: Any, question: Any) -> str:
        number = self.catalog.view(key).check_iteration(iteration)
        shown = " ".join(str(question or "").split())
        return f"**Answers of {iteration_name(number)}** to: {shown}"

    @user_errors
    def compare_iterations(
        self, key: str, iteration_a: Any, iteration_b: Any, question: Any, references: Any,
        temperature: Any = None, max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[IterationPair]:
        """The same question through two iterations (e.g. the base model and the latest), one after the other."""
        question = check_text(question, "question", MAX_QUESTION_CHARS)
        golds = parse_references(references)
        view, target_a, sampling = self._prepare(key, iteration_a, temperature, max_new_tokens)
        _, target_b, _ = self._prepare(key, iteration_b, temperature, max_new_tokens)
        extraction = str(view.config.get("answer_extraction", "full"))
        number = self._seed(seed)

        def summary(initial: str, correction: str) -> str:
            return (
                f"Initial: {verdict(initial, golds, extraction)}\n\n"
                f"Correction: {verdict(correction, golds, extraction)}"
                f"\n\n{transition_summary(initial, correction, golds, extraction)}"
            )

        side_a = ("", "", PENDING)
        for (initial, correction), turn in self._self_correct(view, target_a, question, sampling, number):
            side_a = (initial, correction, summary(initial, correction) if turn > 1 else PENDING)
            yield IterationPair(*side_a, "", "", PENDING)
        for (initial, correction), turn in self._self_correct(view, target_b, question, sampling, number):
            yield IterationPair(*side_a, initial, correction, summary(initial, correction) if turn > 1 else PENDING)

    @user_errors
    def compare_iterations_view(
        self, key: str, iteration_a: Any, iteration_b: Any, question: Any, references: Any,
        temperature: Any = None, max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[tuple[str, ...]]:
        """compare_iterations for the page, each update labelled with its question and iterations."""
        view = self.catalog.view(key)
        left, right = (iteration_name(view.check_iteration(value)) for value in (iteration_a, iteration_b))
        shown = " ".join(str(question or "").split())
        label = f"**Left: {left} · right: {right}**, on: {shown}"
        for pair in self.compare_iterations(
            key, iteration_a, iteration_b, question, references, temperature, max_new_tokens, seed
        ):
            yield (label, *pair)

    # Chatting

    @user_errors
    def chat(
        self, key: str, iteration: Any, message: Any, history: Any, self_correct: bool = True,
        use_instructions: bool = True, temperature: Any = None, max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[list[dict[str, Any]]]:
        """Reply to a message, then (if asked) follow the reply with the model's self-correction of it."""
        text = check_text(message, "message", MAX_MESSAGE_CHARS)
        shown = normalize_history(history)
        if len(shown) + 3 > MAX_HISTORY_MESSAGES:
            raise StascError(f"This chat reached {MAX_HISTORY_MESSAGES} messages. Press Clear to start a new one.")
        view, target, sampling = self._prepare(key, iteration, temperature, max_new_tokens)
        number = self._seed(seed)
        shown.append({"role": "user", "content": text})
        yield from self._reply(view, target, shown, sampling, number, use_instructions, correction=False)
        if self_correct:
            yield from self._reply(view, target, shown, sampling, number, use_instructions, correction=True)

    @user_errors
    def correct_last(
        self, key: str, iteration: Any, history: Any, use_instructions: bool = True, temperature: Any = None,
        max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[list[dict[str, Any]]]:
        """Ask the model to correct its last reply."""
        shown = normalize_history(history)
        if not shown or shown[-1]["role"] != "assistant":
            raise StascError("There is no reply to correct yet: send a message first.")
        if len(shown) + 1 > MAX_HISTORY_MESSAGES:
            raise StascError(f"This chat reached {MAX_HISTORY_MESSAGES} messages. Press Clear to start a new one.")
        view, target, sampling = self._prepare(key, iteration, temperature, max_new_tokens)
        yield from self._reply(view, target, shown, sampling, self._seed(seed), use_instructions, correction=True)

    @user_errors
    def chat_turn(
        self, key: str, iteration: Any, message: Any, kept: Any, self_correct: bool = True,
        use_instructions: bool = True, temperature: Any = None, max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[ChatTurn]:
        """chat for the page: `kept` is the session's own copy of the conversation as it is when this turn runs
        (after any turn queued before it), and the message box empties once the message is in the chat."""
        status = self._reply_status(key, iteration)
        box: Any = ""
        for history in self.chat(
            key, iteration, message, kept, self_correct, use_instructions, temperature, max_new_tokens, seed
        ):
            yield ChatTurn(history, history, box, status)
            box = gr.skip()

    @user_errors
    def correct_turn(
        self, key: str, iteration: Any, kept: Any, use_instructions: bool = True, temperature: Any = None,
        max_new_tokens: Any = None, seed: Any = 0,
    ) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]], str]]:
        """correct_last for the page: corrects the last reply of the conversation as it is when this runs, so
        pressing it right after Send corrects the reply to the message just sent."""
        status = self._reply_status(key, iteration)
        for history in self.correct_last(key, iteration, kept, use_instructions, temperature, max_new_tokens, seed):
            yield history, history, status

    def _reply_status(self, key: str, iteration: Any) -> str:
        number = self.catalog.view(key).check_iteration(iteration)
        return f"Last reply by {iteration_name(number)}."

    def _reply(
        self, view: RunView, target: ModelTarget, shown: list[dict[str, Any]], sampling: DecodeSettings, seed: int,
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
        for text in self.engine.stream(target, conversation, sampling, seed):
            reply["content"] = text
            yield [dict(message) for message in shown]

    # How the run went

    @user_errors
    def metrics(self, key: str) -> MetricsView:
        """acc_t1, acc_t2 (and acc_t3 .. of later rounds), and the transition rates, per iteration; the table with
        delta, i→c and c→i."""
        view = self.catalog.view(key)
        labels = accuracy_labels(view.iterations)
        # Iterations as zero-padded labels: a numeric axis would show fractional iterations between them.
        width = len(str(view.latest))
        values = [(f"{entry['iteration']:0{width}d}", metric_values(entry)) for entry in view.iterations]
        accuracy = pd.DataFrame(
            [
                {"iteration": label, "answers": shown, "in-accuracy": metrics[name]}
                for label, metrics in values
                for name, shown in labels.items()
                if name in metrics
            ],
            columns=["iteration", "answers", "in-accuracy"],
        )
        transitions = pd.DataFrame(
            [
                {"iteration": label, "transition": shown, "rate": metrics[name]}
                for label, metrics in values
                for name, shown in TRANSITION_LABELS.items()
            ],
            columns=["iteration", "transition", "rate"],
        )
        return MetricsView(self._metrics_summary(view), accuracy, transitions, metrics_table(view.iterations))

    @user_errors
    def metrics_view(self, key: str) -> tuple[str, pd.DataFrame, pd.DataFrame, str]:
        """metrics for the page: the table as HTML that fits the window, with each value's interval."""
        summary, accuracy, transitions, _ = self.metrics(key)
        return summary, accuracy, transitions, metrics_html(self.catalog.view(key).iterations)

    @staticmethod
    def _metrics_summary(view: RunView) -> str:
        if not view.iterations:
            return (
                "No metrics yet: the bundled base model has not been trained. Run `python train.py` and press "
                "**Refresh runs**."
            )
        first, last = metric_values(view.iterations[0]), metric_values(view.iterations[-1])
        gap = last["delta"]
        lines = [
            f"Held-out in-accuracy from iteration 0 to {view.latest}: initial answers (acc_t1) "
            f"{first['acc_t1']:.3f} → {last['acc_t1']:.3f}, self-corrections (acc_t2) "
            f"{first['acc_t2']:.3f} → {last['acc_t2']:.3f}. At iteration {view.latest} "
            f"self-correction {'gains' if gap >= 0 else 'loses'} {abs(gap):.3f} over the initial answers (delta)."
        ]
        later = round_accuracies(view.iterations)
        if later:
            lines[0] += f" Later correction rounds at iteration {view.latest}: " + ", ".join(
                f"{name} {last[name]:.3f}" for name in later if name in last
            ) + "."
        lines += [f"- {correction_line(entry)}" for entry in view.iterations]
        return "\n".join(lines[:1] + [""] + lines[1:])

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
                "Iteration 0 is the base model: it is only evaluated, not trained, so it has no "
                f"{'training data' if kind == 'train_data' else 'table of sampled ' + kind.replace('_', ' ')}."
                if iteration == 0 and kind != "evaluation"
                else "This table is empty for this iteration."
            )
            return why, pd.DataFrame()
        shown = min(len(frame), MAX_TABLE_ROWS)
        note = f"{DATA_KINDS[kind]}, iteration {iteration}: {len(frame)} rows"
        if "sample_index" in frame and "question_id" in frame and frame["sample_index"].max() > 0:
            note += f" ({frame['question_id'].nunique()} questions, {int(frame['sample_index'].max()) + 1} samples each)"
        note += f" (showing the first {shown})." if shown < len(frame) else "."
        return note, display_table(frame.head(shown))

    @user_errors
    def data_view(self, key: str, iteration: Any, kind: str) -> tuple[str, str]:
        """data for the page: the table as HTML that fits the window, nothing at all when it is empty."""
        note, frame = self.data(key, iteration, kind)
        return note, html_table(frame)

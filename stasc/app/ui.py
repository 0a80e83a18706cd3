"""The Gradio layout: which component shows what, and which handler each button calls.

All behaviour lives in stasc.app.handlers; this module only wires it to components. Events that
generate share one concurrency slot ("model"), since there is one model in memory; the others
(metrics, data, switching runs) run beside them.

The page's generating actions queue behind one another (trigger_mode "multiple": a click while the
model is busy waits its turn, it is never dropped), each answer carries the question and iteration it
belongs to, and the chat is read from the session's own copy (a gr.State) when an action runs. The API
keeps its own endpoints with the inputs and outputs of the components they name (compare, chat, ...):
they take no trigger from the page, so their signatures stay as API clients know them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stasc.app.conversation import MAX_MESSAGE_CHARS, MAX_QUESTION_CHARS, MAX_REFERENCES_CHARS
from stasc.app.handlers import (
    DATA_KINDS,
    MAX_EXTRA_ROUNDS,
    NEW_TOKENS_RANGE,
    SEED_RANGE,
    TEMPERATURE_RANGE,
    Handlers,
    builtin_examples,
)

logger = logging.getLogger(__name__)

TITLE = "STaSC: a small model that corrects itself"
INTRO = """# STaSC: a small model that corrects itself
[Self-Taught Self-Correction](https://arxiv.org/abs/2503.08681) trains a small model to check and correct
its own answers. Pick a run and an iteration (0 is the untrained base model), ask a question, and watch the
model answer and then correct itself. The **Metrics** tab shows how the run improved, and **Data** what it
was trained on."""
CSS = """
.final-answer { border-left: 4px solid var(--color-accent); padding: 4px 10px; min-height: 2em; }
.transition-summary { font-size: 1.05em; }
.answer-label { color: var(--body-text-color-subdued); }
.stasc-table-wrap { max-width: 100%; overflow-x: auto; }
.stasc-table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.stasc-table caption { text-align: left; padding: 4px 0; color: var(--body-text-color-subdued); }
.stasc-table th, .stasc-table td { text-align: left; vertical-align: top; padding: 4px 8px;
  border-bottom: 1px solid var(--border-color-primary); white-space: pre-wrap; overflow-wrap: anywhere; }
.stasc-table small { color: var(--body-text-color-subdued); }
@media (max-width: 900px) {
  .stasc-table thead { display: none; }
  .stasc-table tr { display: block; border: 1px solid var(--border-color-primary); border-radius: 6px;
    margin-bottom: 8px; padding: 4px 0; }
  .stasc-table td { display: grid; grid-template-columns: minmax(6em, 35%) 1fr; gap: 8px; border: none;
    padding: 2px 8px; }
  .stasc-table td::before { content: attr(data-label); font-weight: 600; overflow-wrap: anywhere; }
}
"""
WAITING = "*The final answer will appear here.*"
GENERATION = {"concurrency_id": "model", "concurrency_limit": 1, "show_progress": "minimal"}
# Sent with every response. Framing is limited with frame-ancestors, not X-Frame-Options: DENY, so that a
# Hugging Face Space (served from *.hf.space inside a page of huggingface.co) can still show the app.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Content-Security-Policy": "frame-ancestors 'self' https://huggingface.co https://*.hf.space",
}


class SecurityHeaders:
    """ASGI middleware that adds SECURITY_HEADERS to every HTTP response (streamed ones included, since it
    only touches the response's start)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                      if name.lower().encode() not in present),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


PAGE_GENERATION = {**GENERATION, "trigger_mode": "multiple", "api_visibility": "private"}
PRIVATE = {"api_visibility": "private"}


def gpu_task(function: Callable[..., Any]) -> Callable[..., Any]:
    """A generating handler as ZeroGPU wants it: `spaces.GPU` takes a GPU for the call only (a no-op off ZeroGPU,
    and when the spaces package is not installed; a checkout's spaces/ templates folder is not that package)."""
    try:
        import spaces
    except ImportError:
        return function
    gpu = getattr(spaces, "GPU", None)
    return function if gpu is None else gpu(function)


def build_app(handlers: Handlers, *, examples: list[list[str]] | None = None) -> gr.Blocks:
    """The app's Blocks; examples default to questions from the built-in test split."""
    examples = builtin_examples() if examples is None else examples
    choices = handlers.catalog.choices()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            source = gr.Dropdown(choices=choices, value=choices[0][1], label="Run", scale=3, elem_id="source")
            # Custom values are allowed so that API clients can name any iteration; the handlers check it.
            iteration = gr.Dropdown(label="Iteration", scale=2, allow_custom_value=True, elem_id="iteration")
            refresh = gr.Button("Refresh runs", scale=0, size="sm")
        run_info = gr.Markdown(label="About the run and iteration", elem_id="run-info")
        with gr.Accordion("Sampling", open=False):
            with gr.Row():
                temperature = gr.Slider(
                    *TEMPERATURE_RANGE, value=0.6, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature"
                )
                max_new_tokens = gr.Slider(
                    *NEW_TOKENS_RANGE, value=64, step=8, label="Max new tokens per answer",
                    elem_id="max-new-tokens",
                )
                seed = gr.Number(
                    value=0, precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], label="Seed", elem_id="seed",
                    info="The same seed, question and settings give the answer the run's own sampler gives.",
                )

        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    question = gr.Textbox(
                        label="Question", placeholder="What is the capital of France?", lines=2, scale=3,
                        max_length=MAX_QUESTION_CHARS, elem_id="question",
                    )
                    references = gr.Textbox(
                        label="Reference answers (optional, separate with ;)", placeholder="Paris", lines=2,
                        scale=2, max_length=MAX_REFERENCES_CHARS, elem_id="references",
                    )
                ask = gr.Button("Answer, then self-correct", variant="primary", elem_id="ask")
                answer_label = gr.Markdown(elem_classes=["answer-label"], elem_id="answer-label")
                rounds_note = gr.Markdown(elem_classes=["answer-label"], elem_id="rounds-note")
                with gr.Row(equal_height=True):
                    with gr.Column():
                        initial = gr.Textbox(
                            label="Initial answer", lines=6, interactive=False, elem_id="initial-answer"
                        )
                        initial_final = gr.Markdown(
                            WAITING, label="Initial answer: final answer and verdict", elem_classes=["final-answer"],
                            elem_id="initial-final",
                        )
                    with gr.Column():
                        correction = gr.Textbox(
                            label="Self-correction", lines=6, interactive=False, elem_id="correction"
                        )
                        correction_final = gr.Markdown(
                            WAITING, label="Self-correction: final answer and verdict",
                            elem_classes=["final-answer"], elem_id="correction-final",
                        )
                    # Later correction rounds, shown for runs evaluated with --eval-rounds R > 1 (see on_source).
                    round_columns, round_outputs = [], []
                    for number in range(2, 2 + MAX_EXTRA_ROUNDS):
                        with gr.Column(visible=False, min_width=200) as column:
                            round_outputs.append(gr.Textbox(
                                label=f"Correction round {number}", lines=6, interactive=False,
                                elem_id=f"correction-{number}",
                            ))
                            round_outputs.append(gr.Markdown(
                                WAITING, label=f"Correction round {number}: final answer and verdict",
                                elem_classes=["final-answer"], elem_id=f"correction-{number}-final",
                            ))
                        round_columns.append(column)
                summary = gr.Markdown(
                    label="What the self-correction did", elem_classes=["transition-summary"], elem_id="summary"
                )
                if examples:
                    gr.Examples(examples, [question, references], label="Questions from the built-in test split")
                gr.Markdown("### Two iterations on the same question")
                with gr.Row(equal_height=True):
                    iteration_a = gr.Dropdown(label="Left", allow_custom_value=True, elem_id="iteration-a")
                    iteration_b = gr.Dropdown(label="Right", allow_custom_value=True, elem_id="iteration-b")
                    compare_pair = gr.Button("Compare iterations", elem_id="compare-iterations")
                pair_label = gr.Markdown(elem_classes=["answer-label"], elem_id="pair-label")
                with gr.Row(equal_height=True):
                    with gr.Column():
                        initial_a = gr.Textbox(label="Left: initial answer", lines=4, interactive=False)
                        correction_a = gr.Textbox(label="Left: self-correction", lines=4, interactive=False)
                        summary_a = gr.Markdown(WAITING, label="Left: verdicts", elem_classes=["final-answer"])
                    with gr.Column():
                        initial_b = gr.Textbox(label="Right: initial answer", lines=4, interactive=False)
                        correction_b = gr.Textbox(label="Right: self-correction", lines=4, interactive=False)
                        summary_b = gr.Markdown(WAITING, label="Right: verdicts", elem_classes=["final-answer"])

            with gr.Tab("Chat", id="chat"):
                chat_status = gr.Markdown(elem_classes=["answer-label"], elem_id="chat-status")
                chatbot = gr.Chatbot(label="Chat with the chosen iteration", height=420, elem_id="chatbot")
                kept_chat = gr.State([])  # the session's copy of the chat, read when an action runs
                with gr.Row(equal_height=True):
                    message = gr.Textbox(
                        label="Message", show_label=False, placeholder="Ask something…", scale=4, max_length=MAX_MESSAGE_CHARS,
                        elem_id="message",
                    )
                    send = gr.Button("Send", variant="primary", scale=0, elem_id="send")
                with gr.Row(equal_height=True):
                    auto_correct = gr.Checkbox(value=True, label="Follow each reply with a self-correction")
                    use_instructions = gr.Checkbox(value=True, label="Wrap the first message in the run's instructions")
                    correct_last = gr.Button("Self-correct the last reply", elem_id="correct-last")
                    clear = gr.Button("Clear", elem_id="clear")

            with gr.Tab("Metrics", id="metrics"):
                metrics_summary = gr.Markdown(label="Summary", elem_id="metrics-summary")
                with gr.Row():
                    accuracy_plot = gr.LinePlot(
                        x="iteration", y="in-accuracy", color="answers", y_lim=[0, 1],
                        title="Held-out in-accuracy", label="In-accuracy",
                    )
                    transitions_plot = gr.LinePlot(
                        x="iteration", y="rate", color="transition", y_lim=[0, 1],
                        title="How self-correction moves answers", label="Transition rates",
                    )
                metrics_html = gr.HTML(elem_id="metrics-table")
                metrics_table = gr.Dataframe(label="Per iteration", interactive=False, visible=False)

            with gr.Tab("Data", id="data"):
                data_kind = gr.Radio(
                    choices=[(label, kind) for kind, label in DATA_KINDS.items()], value="evaluation",
                    label="Table (of the iteration chosen above)", elem_id="data-kind",
                )
                data_note = gr.Markdown(label="About the table", elem_id="data-note")
                data_html = gr.HTML(elem_id="data-table")
                data_table = gr.Dataframe(label="Rows", interactive=False, visible=False)

        def on_source(key: str) -> tuple[Any, ...]:
            view = handlers.select_source(key)
            first = view.iterations[0][1]
            return (
                gr.update(choices=view.iterations, value=view.latest),
                view.info,
                view.temperature,
                view.max_new_tokens,
                gr.update(choices=view.iterations, value=first),
                gr.update(choices=view.iterations, value=view.latest),
                view.rounds_note,
                *(gr.update(visible=number <= view.rounds) for number in range(2, 2 + MAX_EXTRA_ROUNDS)),
            )

        def on_refresh(key: str) -> Any:
            fresh = handlers.refresh()
            keys = [value for _, value in fresh]
            return gr.update(choices=fresh, value=key if key in keys else keys[0])

        sampling = [temperature, max_new_tokens, seed]
        source_outputs = [
            iteration, run_info, temperature, max_new_tokens, iteration_a, iteration_b, rounds_note, *round_columns
        ]
        metrics_outputs = [metrics_summary, accuracy_plot, transitions_plot, metrics_html]
        data_inputs = [source, iteration, data_kind]
        data_outputs = [data_note, data_html]
        compare_inputs = [source, iteration, question, references, *sampling]
        compare_outputs = [initial, initial_final, correction, correction_final, summary]
        pair_inputs = [source, iteration_a, iteration_b, question, references, *sampling]
        pair_outputs = [initial_a, correction_a, summary_a, initial_b, correction_b, summary_b]

        # The API: named endpoints first, so that they keep their names; the page's own events are private.
        gr.on([], gpu_task(handlers.compare), compare_inputs, compare_outputs, api_name="compare", **GENERATION)
        gr.on(
            [], gpu_task(handlers.compare_rounds), compare_inputs, [*compare_outputs, *round_outputs],
            api_name="compare_rounds", **GENERATION,
        )
        gr.on(
            [], gpu_task(handlers.compare_iterations), pair_inputs, pair_outputs, api_name="compare_iterations",
            **GENERATION,
        )
        gr.on(
            [], gpu_task(handlers.chat),
            [source, iteration, message, chatbot, auto_correct, use_instructions, *sampling], chatbot,
            api_name="chat", **GENERATION,
        )
        gr.on(
            [], gpu_task(handlers.correct_last), [source, iteration, chatbot, use_instructions, *sampling], chatbot,
            api_name="correct_last", **GENERATION,
        )
        gr.on([], handlers.metrics, source, [metrics_summary, accuracy_plot, transitions_plot, metrics_table],
              api_name="metrics")
        gr.on([], handlers.data, data_inputs, [data_note, data_table], api_name="data")
        refresh.click(on_refresh, source, source, api_name="refresh").then(
            on_source, source, source_outputs, **PRIVATE
        ).then(handlers.metrics_view, source, metrics_outputs, **PRIVATE).then(
            handlers.data_view, data_inputs, data_outputs, **PRIVATE
        )
        iteration.input(handlers.run_info, [source, iteration], run_info, api_name="run_info").then(
            handlers.data_view, data_inputs, data_outputs, **PRIVATE
        )
        data_kind.input(handlers.data_view, data_inputs, data_outputs, **PRIVATE)
        for trigger in (source.input, demo.load):
            trigger(on_source, source, source_outputs, **PRIVATE).then(
                handlers.metrics_view, source, metrics_outputs, **PRIVATE
            ).then(handlers.data_view, data_inputs, data_outputs, **PRIVATE)

        gr.on(
            [ask.click, question.submit], gpu_task(handlers.compare_view), compare_inputs,
            [answer_label, *compare_outputs, *round_outputs], **PAGE_GENERATION,
        )
        compare_pair.click(
            gpu_task(handlers.compare_iterations_view), pair_inputs, [pair_label, *pair_outputs], **PAGE_GENERATION
        )
        chat_events = [
            gr.on(
                [send.click, message.submit], gpu_task(handlers.chat_turn),
                [source, iteration, message, kept_chat, auto_correct, use_instructions, *sampling],
                [chatbot, kept_chat, message, chat_status], **PAGE_GENERATION,
            ),
            correct_last.click(
                gpu_task(handlers.correct_turn), [source, iteration, kept_chat, use_instructions, *sampling],
                [chatbot, kept_chat, chat_status], **PAGE_GENERATION,
            ),
        ]
        clear.click(lambda: ([], [], ""), None, [chatbot, kept_chat, chat_status], cancels=chat_events, queue=False,
                    **PRIVATE)
        chatbot.clear(lambda: ([], ""), None, [kept_chat, chat_status], cancels=chat_events, queue=False, **PRIVATE)
    return demo


def launch(
    demo: gr.Blocks, *, host: str | None = None, port: int | None = None, concurrency: int = 4, max_queue: int = 32,
    block: bool = True,
) -> gr.Blocks:
    """Queue (a bounded line, a few events at once) and serve; host/port None leave Gradio's env defaults."""
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.launch(
        server_name=host, server_port=port, css=CSS, show_error=False, ssr_mode=False, quiet=True,
        prevent_thread_lock=True, footer_links=["api", "gradio"],
        app_kwargs={"middleware": [Middleware(SecurityHeaders)]},
    )
    logger.info("Serving the app at %s", demo.local_url)
    if block:
        demo.block_thread()
    return demo

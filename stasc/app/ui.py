"""The Gradio layout: which component shows what, and which handler each button calls.

All behaviour lives in stasc.app.handlers; this module only wires it to components. Events that
generate share one concurrency slot ("model"), since there is one model in memory; the others
(metrics, data, switching runs) run beside them.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stasc.app.handlers import (
    DATA_KINDS,
    MAX_MESSAGE_CHARS,
    MAX_QUESTION_CHARS,
    MAX_REFERENCES_CHARS,
    NEW_TOKENS_RANGE,
    TEMPERATURE_RANGE,
    Handlers,
    builtin_examples,
)

TITLE = "STaSC: a small model that corrects itself"
INTRO = """# STaSC: a small model that corrects itself
[Self-Taught Self-Correction](https://arxiv.org/abs/2503.08681) trains a small model to check and correct
its own answers. Pick a run and an iteration (0 is the untrained base model), ask a question, and watch the
model answer and then correct itself. The **Metrics** tab shows how the run improved, and **Data** what it
was trained on."""
CSS = """
.final-answer { border-left: 4px solid var(--color-accent); padding: 4px 10px; min-height: 2em; }
.transition-summary { font-size: 1.05em; }
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
        run_info = gr.Markdown(elem_id="run-info")
        with gr.Accordion("Sampling", open=False):
            with gr.Row():
                temperature = gr.Slider(
                    *TEMPERATURE_RANGE, value=0.6, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature"
                )
                max_new_tokens = gr.Slider(
                    *NEW_TOKENS_RANGE, value=64, step=8, label="Max new tokens per answer",
                    elem_id="max-new-tokens",
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
                with gr.Row(equal_height=True):
                    with gr.Column():
                        initial = gr.Textbox(
                            label="Initial answer", lines=6, interactive=False, elem_id="initial-answer"
                        )
                        initial_final = gr.Markdown(WAITING, elem_classes=["final-answer"], elem_id="initial-final")
                    with gr.Column():
                        correction = gr.Textbox(
                            label="Self-correction", lines=6, interactive=False, elem_id="correction"
                        )
                        correction_final = gr.Markdown(
                            WAITING, elem_classes=["final-answer"], elem_id="correction-final"
                        )
                summary = gr.Markdown(elem_classes=["transition-summary"], elem_id="summary")
                if examples:
                    gr.Examples(examples, [question, references], label="Questions from the built-in test split")
                gr.Markdown("### Two iterations on the same question")
                with gr.Row(equal_height=True):
                    iteration_a = gr.Dropdown(label="Left", allow_custom_value=True, elem_id="iteration-a")
                    iteration_b = gr.Dropdown(label="Right", allow_custom_value=True, elem_id="iteration-b")
                    compare_pair = gr.Button("Compare iterations", elem_id="compare-iterations")
                with gr.Row(equal_height=True):
                    with gr.Column():
                        initial_a = gr.Textbox(label="Left: initial answer", lines=4, interactive=False)
                        correction_a = gr.Textbox(label="Left: self-correction", lines=4, interactive=False)
                        summary_a = gr.Markdown(WAITING, elem_classes=["final-answer"])
                    with gr.Column():
                        initial_b = gr.Textbox(label="Right: initial answer", lines=4, interactive=False)
                        correction_b = gr.Textbox(label="Right: self-correction", lines=4, interactive=False)
                        summary_b = gr.Markdown(WAITING, elem_classes=["final-answer"])

            with gr.Tab("Chat", id="chat"):
                chatbot = gr.Chatbot(label="Chat with the chosen iteration", height=420, elem_id="chatbot")
                with gr.Row(equal_height=True):
                    message = gr.Textbox(
                        show_label=False, placeholder="Ask something…", scale=4, max_length=MAX_MESSAGE_CHARS,
                        elem_id="message",
                    )
                    send = gr.Button("Send", variant="primary", scale=0)
                with gr.Row(equal_height=True):
                    auto_correct = gr.Checkbox(value=True, label="Follow each reply with a self-correction")
                    use_instructions = gr.Checkbox(value=True, label="Wrap the first message in the run's instructions")
                    correct_last = gr.Button("Self-correct the last reply")
                    clear = gr.Button("Clear")

            with gr.Tab("Metrics", id="metrics"):
                metrics_summary = gr.Markdown()
                with gr.Row():
                    accuracy_plot = gr.LinePlot(
                        x="iteration", y="in-accuracy", color="answers", y_lim=[0, 1],
                        title="Held-out in-accuracy", label="In-accuracy",
                    )
                    transitions_plot = gr.LinePlot(
                        x="iteration", y="rate", color="transition", y_lim=[0, 1],
                        title="How self-correction moves answers", label="Transition rates",
                    )
                metrics_table = gr.Dataframe(label="Per iteration", interactive=False)

            with gr.Tab("Data", id="data"):
                data_kind = gr.Radio(
                    choices=[(label, kind) for kind, label in DATA_KINDS.items()], value="evaluation",
                    label="Table (of the iteration chosen above)",
                )
                data_note = gr.Markdown()
                data_table = gr.Dataframe(interactive=False, wrap=True, max_height=600)

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
            )

        def on_refresh(key: str) -> Any:
            fresh = handlers.refresh()
            keys = [value for _, value in fresh]
            return gr.update(choices=fresh, value=key if key in keys else keys[0])

        source_outputs = [iteration, run_info, temperature, max_new_tokens, iteration_a, iteration_b]
        metrics_outputs = [metrics_summary, accuracy_plot, transitions_plot, metrics_table]
        data_inputs = [source, iteration, data_kind]
        # Named endpoints (for API clients such as gradio_client) first, so that they keep their names.
        data_kind.input(handlers.data, data_inputs, [data_note, data_table], api_name="data")
        source.input(on_source, source, source_outputs, api_visibility="private").then(
            handlers.metrics, source, metrics_outputs, api_name="metrics"
        ).then(handlers.data, data_inputs, [data_note, data_table], api_visibility="private")
        refresh.click(on_refresh, source, source, api_name="refresh").then(
            on_source, source, source_outputs, api_visibility="private"
        ).then(handlers.metrics, source, metrics_outputs, api_visibility="private").then(
            handlers.data, data_inputs, [data_note, data_table], api_visibility="private"
        )
        iteration.input(handlers.run_info, [source, iteration], run_info, api_name="run_info").then(
            handlers.data, data_inputs, [data_note, data_table], api_visibility="private"
        )
        demo.load(on_source, source, source_outputs, api_visibility="private").then(
            handlers.metrics, source, metrics_outputs, api_visibility="private"
        ).then(handlers.data, data_inputs, [data_note, data_table], api_visibility="private")
        sampling = [temperature, max_new_tokens]
        compare_outputs = [initial, initial_final, correction, correction_final, summary]
        gr.on(
            [ask.click, question.submit], handlers.compare, [source, iteration, question, references, *sampling],
            compare_outputs, api_name="compare", **GENERATION,
        )
        compare_pair.click(
            handlers.compare_iterations, [source, iteration_a, iteration_b, question, references, *sampling],
            [initial_a, correction_a, summary_a, initial_b, correction_b, summary_b],
            api_name="compare_iterations", **GENERATION,
        )
        chat_inputs = [source, iteration, message, chatbot, auto_correct, use_instructions, *sampling]
        gr.on(
            [send.click, message.submit], handlers.chat, chat_inputs, chatbot, api_name="chat", **GENERATION
        ).success(lambda: "", None, message, api_visibility="private", queue=False)
        correct_last.click(
            handlers.correct_last, [source, iteration, chatbot, use_instructions, *sampling], chatbot,
            api_name="correct_last", **GENERATION,
        )
        clear.click(lambda: [], None, chatbot, api_visibility="private", queue=False)
    return demo


def launch(
    demo: gr.Blocks, *, host: str | None = None, port: int | None = None, concurrency: int = 4, max_queue: int = 32,
    block: bool = True,
) -> gr.Blocks:
    """Queue (a bounded line, a few events at once) and serve; host/port None leave Gradio's env defaults."""
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.launch(
        server_name=host, server_port=port, css=CSS, show_error=False, ssr_mode=False, quiet=True,
        prevent_thread_lock=not block, footer_links=["api", "gradio"],
        app_kwargs={"middleware": [Middleware(SecurityHeaders)]},
    )
    return demo

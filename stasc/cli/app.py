"""Flags and environment of `python app.py`: which runs to offer, where to serve, how many at once."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stasc.errors import StascError
from stasc.log import setup_logging

if TYPE_CHECKING:
    import gradio as gr

    from stasc.app.handlers import Handlers

logger = logging.getLogger("stasc.app")

DEFAULT_RUNS_DIR = "runs"
DESCRIPTION = """Serve the STaSC app: compare a model's answer with its self-correction, chat, and see metrics.

examples:
  python app.py                                 # runs under ./runs, else the bundled base model
  python app.py --runs-dir runs --port 7860
  python app.py --hub-repo my-user/smollm2-stasc --hub-repo my-user/other-run@v1
  STASC_HUB_REPOS=my-user/smollm2-stasc python app.py --no-local-runs

Visitors choose among these runs only: nothing they type is read as a path or a repository."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python app.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs-dir", default=os.environ.get("STASC_RUNS_DIR") or DEFAULT_RUNS_DIR,
        help="Directory whose subdirectories are runs (train.py --output-dir), or a run itself. "
        "Default: $STASC_RUNS_DIR, else ./runs.",
    )
    parser.add_argument("--no-local-runs", action="store_true", help="Offer no local runs, only --hub-repo ones.")
    parser.add_argument(
        "--hub-repo", action="append", default=None, metavar="ORG/NAME[@REVISION]",
        help="A run pushed to the Hub (repeatable). Default: $STASC_HUB_REPOS, comma-separated.",
    )
    parser.add_argument("--host", default=None, help="Address to serve on (default $GRADIO_SERVER_NAME or 127.0.0.1).")
    parser.add_argument("--port", type=int, default=None, help="Port (default $GRADIO_SERVER_PORT or 7860).")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="Events handled at once (generation: one at a time)."
    )
    parser.add_argument("--max-queue", type=int, default=32, help="Visitors that may wait in the queue.")
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=None,
        help="Weights dtype (default: each run's own setting).",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="Allow runs whose model needs its own code (off by default)."
    )
    parser.add_argument("--no-preload", action="store_true", help="Load the model on the first request, not at start.")
    parser.add_argument(
        "--preload-all", action="store_true",
        help="Load every iteration of every offered run before serving (a ZeroGPU Space generates in a process "
        "forked for each request, where what it would load is lost).",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.hub_repo is None:
        args.hub_repo = [spec for spec in os.environ.get("STASC_HUB_REPOS", "").replace(" ", ",").split(",") if spec]
    if args.concurrency < 1 or args.max_queue < 1:
        parser.error("--concurrency and --max-queue must be at least 1")
    return args


def create_app(args: argparse.Namespace) -> tuple[gr.Blocks, Handlers]:
    """The app for parsed flags (tests build it this way too)."""
    from stasc.app.catalog import Catalog
    from stasc.app.engine import Engine
    from stasc.app.handlers import Handlers
    from stasc.app.ui import build_app

    catalog = Catalog(None if args.no_local_runs else Path(args.runs_dir), args.hub_repo)
    handlers = Handlers(catalog, Engine(), dtype=args.dtype, allow_remote_code=args.trust_remote_code)
    return build_app(handlers), handlers


def _preload(handlers: Handlers) -> None:
    """Load the default run's latest iteration in the background; a failure is shown later, per request."""
    try:
        view = handlers.catalog.view(handlers.catalog.default_key)
        target = view.target(view.latest, dtype=handlers.dtype, allow_remote_code=handlers.allow_remote_code)
        handlers.engine.preload(target)
        logger.info("Model ready: %s, iteration %d", view.choice.label, view.latest)
    except StascError as error:
        logger.warning("Could not preload the model: %s", error)


def _preload_all(handlers: Handlers) -> None:
    """Load each offered run's iterations now (the latest up to the engine's adapter cache), before serving."""
    for _, key in handlers.catalog.choices():
        try:
            view = handlers.catalog.view(key)
            for iteration in view.iteration_numbers[-handlers.engine.max_adapters - 1:]:
                target = view.target(iteration, dtype=handlers.dtype, allow_remote_code=handlers.allow_remote_code)
                handlers.engine.preload(target)
            logger.info("Model ready: %s, iterations %s", view.choice.label, view.iteration_numbers)
        except StascError as error:
            logger.warning("Could not preload %s: %s", key, error)


def main(argv: Sequence[str] | None = None) -> int:
    """`python app.py ...`: serve until interrupted; returns the process exit code."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        demo, handlers = create_app(args)
    except StascError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.preload_all:
        _preload_all(handlers)
    elif not args.no_preload:
        threading.Thread(target=_preload, args=(handlers,), name="stasc-preload", daemon=True).start()
    from stasc.app.ui import launch

    try:
        launch(demo, host=args.host, port=args.port, concurrency=args.concurrency, max_queue=args.max_queue)
    except KeyboardInterrupt:
        pass
    return 0

"""The console of every entry point: log lines on stderr, one live progress bar per step, and the libraries'
chatter kept out of sight."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import warnings
from collections.abc import Iterator

from tqdm.auto import tqdm

# Warnings about the libraries' own internals that a user of stasc cannot act on (message patterns, matched
# at the start of the message).
UNACTIONABLE_WARNINGS = (
    # peft asks transformers for a deprecated attribute while it trains an adapter
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)

_active_bar: contextvars.ContextVar[tqdm | None] = contextvars.ContextVar("stasc_progress_bar", default=None)


class _BarSafeHandler(logging.StreamHandler):
    """Writes each record above the live progress bars, which are drawn again below it, so a log line never
    lands in the middle of a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise; the handler reports it as StreamHandler does
            self.handleError(record)


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps; quiet the libraries' chatter below warnings and their unactionable
    warnings."""
    handler = _BarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for category, message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextlib.contextmanager
def progress(desc: str, total: int, unit: str) -> Iterator[tqdm]:
    """A live progress bar on stderr, updated in place.

    Opened while another bar of this thread is open, it is that bar: a step that samples its prompts in
    several calls shows one bar for the step, and the outer bar's total counts every call's share.
    """
    outer = _active_bar.get()
    if outer is not None:
        yield outer
        return
    with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr) as bar:
        token = _active_bar.set(bar)
        try:
            yield bar
        finally:
            _active_bar.reset(token)

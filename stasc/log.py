"""Logging for every entry point: one format on stderr, the libraries' chatter kept below warnings."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps; quiet the libraries' chatter below warnings."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""User-facing errors: one exception type whose message says what is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class StascError(Exception):
    """An error caused by input the user can fix (a flag, a file, a column, a model name).

    Entry points print its message without a traceback.
    """


def closest_hint(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when nothing is close."""
    choices = list(choices)
    lowered = {choice.lower(): choice for choice in choices}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return f" Did you mean {lowered[match[0]]!r}?" if match else ""


def check_choice(name: str, choices: Sequence[str], what: str) -> str:
    """name if it is one of choices; else an error that lists them and suggests the closest."""
    if name not in choices:
        raise StascError(f"Unknown {what} {name!r}. Choose one of: {', '.join(choices)}." + closest_hint(name, choices))
    return name

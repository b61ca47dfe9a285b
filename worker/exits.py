"""A process's exit status in words."""

from __future__ import annotations

import signal


def describe_exit(exitcode: int) -> str:
    """A process's exit code in words (``multiprocessing``/``subprocess`` convention: negative
    is the signal that killed it)."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exited with status {exitcode}"

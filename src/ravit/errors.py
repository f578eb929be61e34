"""Error-message helpers shared by the data readers and the runtimes (no torch)."""

from __future__ import annotations


def describe_error(err: BaseException) -> str:
    """ "Type: first line of the message", to keep error messages on one line."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__

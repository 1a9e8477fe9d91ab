"""User-facing errors.

Anything a user can cause with bad input (a malformed trace row, an unknown GPU,
a model that does not fit) raises :class:`SimError` with a one-line message. The
CLI prints that line and exits non-zero; it never shows a traceback for these.
"""


class SimError(Exception):
    """An error caused by the user's input, reported as one line."""


def unknown(kind: str, name: str, known) -> SimError:
    """Build the standard 'unknown X' error that lists the known names."""
    names = ", ".join(sorted(known))
    return SimError(f"unknown {kind} '{name}'; known: {names}")

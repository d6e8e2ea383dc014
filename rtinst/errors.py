"""User-facing errors.

A ``UserError`` is a problem with the user's input (a file, a key, a value), not a bug.
The CLI prints it as one line, ``error: <message>``, and exits with status 2; no traceback.
Messages name the file/key/id and say what is wrong.
"""

import difflib


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, never as a traceback."""


def did_you_mean(name: str, candidates: list[str], *, prefix: str = "", listing: str | None = None,
                 cutoff: float = 0.5) -> str:
    """The tail of an "unknown name" message: ``; did you mean 'model.lr'?`` for the closest
    candidate, else ``; <listing>: a, b, c`` when ``listing`` is given, else nothing."""
    close = difflib.get_close_matches(str(name), candidates, n=1, cutoff=cutoff)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; {listing}: {', '.join(candidates)}" if listing else ""

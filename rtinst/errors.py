"""User-facing errors.

A ``UserError`` is a problem with the user's input (a file, a key, a value), not a bug.
The CLI prints it as one line, ``error: <message>``, and exits with status 2; no traceback.
Messages name the file/key/id and say what is wrong.
"""


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, never as a traceback."""

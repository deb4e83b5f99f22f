"""The one exception type for mistakes a user can fix.

The CLI turns a ``UserError`` into a single line on standard error and exit status 2.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A bad flag, an unknown name, a missing file: say what was wrong and what to do."""


def shown(value: object) -> str:
    """A user's value as one line of a message: as it is when printable, else its repr."""
    text = str(value)
    return text if text.isprintable() else repr(value)

"""The ``pflbench`` command line. The only package that prints to the terminal: each module
parses one command group's arguments and prints its results, nothing else.

Results go to standard output; progress and errors to standard error. A mistake the user
can fix (``UserError``, a bad flag) is one line on standard error and exit status 2.

The command modules register their commands on ``app`` when imported, in the order ``--help``
lists them.
"""

from __future__ import annotations

import sys

import typer

from pflbench.errors import UserError
from pflbench.cli.common import (
    app, _err,
)
from pflbench.cli import run, tables, budget, export, show  # noqa: F401,E402  (registers the commands, in order)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: finished rounds kept, a resume message


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Command-line usage errors under the installed typer: its own exception class (typer
    0.21 and later vendor click) or click's (earlier typer, which flwr pins)."""
    import click

    return tuple(t for t in (getattr(typer, "TyperException", None), click.ClickException) if t is not None)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="pflbench", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = 130
    except _usage_errors() as exc:  # usage errors: bad flag, bad value, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `pflbench`: the help, as usual
            _err(message)
        else:
            _err(f"error: {' '.join(message.split())}")
        code = 2
    except UserError as exc:
        _err(f"error: {exc}")
        code = 2
    except OSError as exc:  # what no command caught itself: a name too long, a folder not writable
        _err(f"error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)

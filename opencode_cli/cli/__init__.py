"""The ``opencode`` command.

Start-up time matters (it runs once per shell command), so this package imports only typer and
the command modules, which themselves import the client and anything heavy inside the command
functions. The client runs on the stdlib transport: no httpx, trio, quart or daemon code is loaded.

Adding commands: write a module here with ``register(app: typer.Typer)`` and list it in
``_COMMAND_MODULES`` (one line). A subcommand of ``sessions`` (e.g. ``sessions prune``) is
``@sessions.group.command()`` on a function in your module, which then only needs importing
(list it too; its ``register`` may do nothing).
"""

from __future__ import annotations

import sys

import typer

from . import daemon, info, mcp, projects, send, serve, sessions, tui

app = typer.Typer(
    name="opencode",
    help="Talk to the opencode daemon: send messages, manage sessions and projects.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # rich help costs ~55 ms of start-up (stack notes 9)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_COMMAND_MODULES = (
    send,
    serve,
    info,
    sessions,
    projects,
    tui,
    daemon,
    mcp,
)

for _module in _COMMAND_MODULES:
    _module.register(app)


def main() -> None:
    """Entry point: map our exceptions to exit codes and one-line messages on stderr."""
    from ._common import EXIT_ERROR, EXIT_INTERRUPTED

    try:
        _run()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `opencode sessions | head -1`: the reader left; exit quietly without a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)


def _run() -> None:
    from opencode_cli._exceptions import APIError, ConnectError, OpencodeError

    from ._common import EXIT_ERROR
    from ._output import error

    try:
        app()
    except ConnectError as exc:
        error(f"{exc}\nIs the daemon running? Start it with `opencode serve`.")
        sys.exit(EXIT_ERROR)
    except APIError as exc:
        error(f"{exc.message} ({exc.code})")
        sys.exit(EXIT_ERROR)
    except OpencodeError as exc:
        error(str(exc))
        sys.exit(EXIT_ERROR)

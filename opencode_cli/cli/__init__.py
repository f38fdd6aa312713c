"""The ``opencode`` command.

Start-up time matters (it runs once per shell command), so this package imports only typer and
the command modules, which themselves import the client and anything heavy inside the command
functions. The client runs on the stdlib transport: no httpx, trio, quart or daemon code is loaded.

Adding commands: write a module here with ``register(app: typer.Typer)`` and list it in
``_COMMAND_MODULES`` (one line). A subcommand of ``sessions`` (e.g. ``sessions prune``) is
``@sessions.group.command()`` on a function in your module, which then only needs importing
(list it too; its ``register`` may do nothing).
"""

import os
import sys
from typing import Annotated

import typer

from . import (
    chat,
    completion,
    daemon,
    history,
    info,
    mcp,
    permissions,
    projects,
    send,
    serve,
    sessions,
    tui,
)

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
    chat,
    daemon,
    mcp,
    permissions,
    history,
    completion,
)

for _module in _COMMAND_MODULES:
    _module.register(app)


def _version(value: bool) -> None:
    if value:
        from opencode_cli import __version__

        sys.stdout.write(f"opencode {__version__}\n")
        raise typer.Exit()


def _install_completion(value: bool) -> None:
    if value:
        shell = completion.detect_shell()
        completion.report(shell, completion.install(shell))
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", help="Print the version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
    install_completion: Annotated[
        bool,
        typer.Option(
            "--install-completion",
            help="Install completion for your shell ($SHELL).",
            is_eager=True,
            callback=_install_completion,
        ),
    ] = False,
) -> None:
    """Talk to the opencode daemon: send messages, manage sessions and projects."""


def main() -> None:
    """Entry point: map our exceptions to exit codes and one-line messages on stderr."""
    from ._common import EXIT_ERROR, EXIT_INTERRUPTED

    if completion.COMPLETE_VAR in os.environ:
        from typer._completion_classes import completion_init

        completion_init()
    try:
        _run()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `opencode sessions | head -1`: the reader left; exit quietly without a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)


def _run() -> None:
    from opencode_cli._exceptions import APIError, ConnectError, OpencodeError

    from ._common import EXIT_ERROR
    from ._output import error

    try:
        app()
    except ConnectError as exc:
        error(f"{exc}\nIs the daemon running? Start it with `opencode daemon start`.")
        sys.exit(EXIT_ERROR)
    except APIError as exc:
        from ._output import short_text, warn
        from ._turn import key_hint

        error(f"{short_text(exc.message, 500)} ({exc.code})")
        if hint := key_hint(exc.message):
            warn(hint)
        sys.exit(EXIT_ERROR)
    except OpencodeError as exc:
        error(str(exc))
        sys.exit(EXIT_ERROR)

"""What every command shares: the connection options, making a client, exit codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from opencode_cli import Client

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="OPENCODE_URL",
        help="Daemon address: http://HOST:PORT, https://… or unix:///PATH "
        "[default: the local socket].",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NoStartOpt = Annotated[
    bool,
    typer.Option(
        "--no-start",
        envvar="OPENCODE_NO_AUTOSTART",
        help="Do not start a daemon when none answers on the local socket.",
    ),
]


def client(url: str | None, *, autostart: bool = False, no_start: bool = False) -> Client:
    """A client on the stdlib transport (fast start, no trio); maybe start the daemon first.

    Only the default socket is ever auto-started: an explicit URL names a daemon someone runs.
    """
    from opencode_cli import Client

    c = Client(url, backend="stdlib")
    if autostart and not no_start and c.endpoint.default:
        from ._autostart import ensure_daemon

        ensure_daemon(c)
    return c


def usage_error(message: str) -> typer.Exit:
    """Print a usage error the way click does and give the exit to raise (status 2)."""
    from ._output import error

    error(message)
    return typer.Exit(EXIT_USAGE)

"""``opencode serve``: the daemon in the foreground.

It execs ``python -m opencoded`` with the arguments untouched, so the flags and help are the
daemon's own and the CLI process never imports the daemon (or trio).
"""

import os
import sys

import typer


def serve(ctx: typer.Context) -> None:
    """Run the daemon in the foreground (same flags as opencoded; see `opencode serve --help`)."""
    argv = [sys.executable, "-m", "opencoded", *ctx.args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def register(app: typer.Typer) -> None:
    app.command(
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
        add_help_option=False,
    )(serve)

"""``opencode completion bash|zsh|fish`` and ``opencode --install-completion``.

The script is generated once (printed, or written where the shell looks for it) instead of
``eval "$(opencode completion bash)"`` in every shell start-up, so a new shell costs nothing.
At completion time the shell runs ``_OPENCODE_COMPLETE=complete_bash opencode``; ``main`` sees
that variable and only then loads typer's completion classes.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from ._common import usage_error

PROG = "opencode"
COMPLETE_VAR = "_OPENCODE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell) + "\n"


def install_path(shell: str, env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Where each shell loads completions from without editing its rc file (zsh: ~/.zfunc)."""
    home = Path(env.get("HOME") or Path.home())
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return {
        "bash": data / "bash-completion" / "completions" / PROG,
        "zsh": home / ".zfunc" / f"_{PROG}",
        "fish": config / "fish" / "completions" / f"{PROG}.fish",
    }[shell]


def install(shell: str) -> Path:
    path = install_path(shell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script(shell))
    return path


def detect_shell() -> str:
    name = Path(os.environ.get("SHELL", "")).name
    if name not in SHELLS:
        raise usage_error(
            f"cannot tell your shell from $SHELL ({name or 'unset'}): use "
            "`opencode completion bash|zsh|fish --install`"
        )
    return name


def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", show_default=False)],
    install_: Annotated[
        bool, typer.Option("--install", help="Write the script where the shell loads it.")
    ] = False,
) -> None:
    """Print (or install) the shell completion script."""
    import sys

    if shell not in SHELLS:
        raise usage_error(f"unsupported shell {shell!r}: use one of {', '.join(SHELLS)}")
    if not install_:
        sys.stdout.write(script(shell))
        return
    report(shell, install(shell))


def report(shell: str, path: Path) -> None:
    from ._output import err

    err(f"wrote {path}")
    if shell == "zsh":
        err("add to ~/.zshrc (once): fpath=(~/.zfunc $fpath); autoload -Uz compinit && compinit")
    elif shell == "bash":
        err("bash-completion loads it in new shells (package bash-completion must be installed)")
    else:
        err("fish loads it in new shells")


def register(app: typer.Typer) -> None:
    app.command()(completion)

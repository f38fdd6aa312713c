"""``opencode daemon install|uninstall|start|stop|restart|status``, ``opencode sessions prune``.

Two ways to run the daemon, and every command picks the right one by itself:

- as a systemd user service: ``install`` writes ``opencoded.service`` and ``opencoded.socket`` to
  ``$XDG_CONFIG_HOME/systemd/user/`` and enables the socket; start/stop/status then go through
  ``systemctl --user``;
- on its own (no units, or no user manager, as in many containers): ``start`` spawns it in the
  background (the auto-start path), ``stop`` signals the pid written in the lock file next to
  the socket (the flock on that file tells a live daemon from a stale pid).

Like the rest of the CLI this never imports the daemon, trio or quart.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from . import sessions as _sessions
from ._common import EXIT_ERROR, JsonOpt, UrlOpt, client, usage_error

UNITS = ("opencoded.service", "opencoded.socket")
STOP_TIMEOUT = 10.0
EXIT_NOT_RUNNING = 3  # what `systemctl status` and LSB init scripts use

group = typer.Typer(
    help="Run opencoded as a service: install, start, stop, restart, reload, status."
)


# ---- where things are -----------------------------------------------------------------


def units_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_templates() -> Path:
    """The shipped unit files: installed data, else the source tree (editable installs)."""
    candidates = [
        Path(sys.prefix) / "share" / "opencode" / "systemd",
        Path(__file__).resolve().parents[2] / "systemd",
    ]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in UNITS):
            return candidate
    raise FileNotFoundError("the systemd unit files are not installed with opencode")


def opencoded_path() -> str:
    """The `opencoded` next to this Python (same environment as the CLI), else on PATH."""
    sibling = Path(sys.executable).parent / "opencoded"
    if os.access(sibling, os.X_OK):
        return str(sibling.absolute())
    found = shutil.which("opencoded")
    if found is None:
        raise FileNotFoundError("cannot find the opencoded program (is opencode installed?)")
    return str(Path(found).absolute())


# ---- rendering the units ---------------------------------------------------------------


def _quote(value: str) -> str:
    """A systemd unit-file value in double quotes, with specifiers (%) escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def render_service(template: str, executable: str, path_env: str | None) -> str:
    """The service unit with our ExecStart and, when given, the user's PATH.

    The PATH is the one of the shell that ran `install`: the user manager's own PATH is
    minimal, and the agent's commands need the user's toolchains (node, cargo, ...).
    """
    command = _quote(executable).replace("$", "$$")  # ExecStart expands $VARS
    lines = [f"ExecStart={command}"]
    if path_env:
        lines.append(f"Environment={_quote('PATH=' + path_env)}")
    rendered, count = re.subn(r"(?m)^ExecStart=.*$", "\n".join(lines), template)
    if count != 1:
        raise ValueError("the service template must have exactly one ExecStart= line")
    return rendered


# ---- systemctl -------------------------------------------------------------------------


def _systemctl(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", "--user", *args], capture_output=True, text=True, timeout=60, check=check
    )


def user_manager() -> bool:
    """True when `systemctl --user` can reach a running user manager."""
    if shutil.which("systemctl") is None:
        return False
    try:
        return _systemctl("show-environment").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def units_installed() -> bool:
    return all((units_dir() / name).is_file() for name in UNITS)


def managed_by_systemd() -> bool:
    return units_installed() and user_manager()


def _fail(result: subprocess.CompletedProcess[str]) -> typer.Exit:
    from ._output import error

    error((result.stderr or result.stdout).strip() or f"systemctl failed ({result.returncode})")
    return typer.Exit(EXIT_ERROR)


# ---- the daemon without systemd -----------------------------------------------------------


def running_pid(socket_path: Path) -> int | None:
    """The pid of the daemon holding the socket's lock file, or None when none does."""
    import fcntl

    lock = Path(f"{socket_path}.lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a daemon is alive
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # a stale file: nobody holds it
    finally:
        os.close(fd)


def _wait_gone(socket_path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running_pid(socket_path) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- commands --------------------------------------------------------------------------


@group.command()
def install(
    start: Annotated[
        bool, typer.Option("--start/--no-start", help="Enable and start the socket now.")
    ] = True,
    opencoded: Annotated[
        str | None, typer.Option("--opencoded", help="Path of the opencoded to run.")
    ] = None,
) -> None:
    """Write the systemd user units (socket activation) and enable them."""
    from ._output import err, out

    executable = opencoded or opencoded_path()
    if not os.access(executable, os.X_OK):
        raise usage_error(f"not an executable: {executable}")
    templates = unit_templates()
    target = units_dir()
    target.mkdir(parents=True, exist_ok=True)
    service = render_service(
        (templates / "opencoded.service").read_text(), executable, os.environ.get("PATH")
    )
    (target / "opencoded.service").write_text(service)
    shutil.copyfile(templates / "opencoded.socket", target / "opencoded.socket")
    out(f"wrote {target / 'opencoded.service'} and {target / 'opencoded.socket'}")
    if not user_manager():
        err("no systemd user manager here: the units are written, not enabled")
        return
    if (result := _systemctl("daemon-reload")).returncode != 0:
        raise _fail(result)
    if not start:
        out("enable with: systemctl --user enable --now opencoded.socket")
        return
    from opencode_cli._endpoint import socket_path

    if (pid := running_pid(socket_path())) is not None:
        err(f"a daemon started without systemd is running (pid {pid});")
        err("run `opencode daemon stop`, then `opencode daemon start`")
        result = _systemctl("enable", "opencoded.socket")
    else:
        result = _systemctl("enable", "--now", "opencoded.socket")
    if result.returncode != 0:
        raise _fail(result)
    out("enabled opencoded.socket: the daemon starts on the first connection")


@group.command()
def uninstall() -> None:
    """Stop and disable the units, then remove them."""
    from ._output import out

    target = units_dir()
    if user_manager():
        _systemctl("disable", "--now", *UNITS)
    for name in UNITS:
        (target / name).unlink(missing_ok=True)
    if user_manager():
        _systemctl("daemon-reload")
    out(f"removed the opencoded units from {target}")


@group.command("start")
def start_cmd(url: UrlOpt = None) -> None:
    """Start the daemon (through systemd when the units are installed)."""
    from ._output import out

    if managed_by_systemd():
        if (result := _systemctl("start", *UNITS)).returncode != 0:
            raise _fail(result)
        out("started opencoded.service")
        return
    c = client(url)
    if c.endpoint.uds is None:
        raise usage_error("only the daemon on the local socket can be started from here")
    from opencode_cli import ConnectError

    try:
        c.health()
        out("opencoded is already running")
        return
    except ConnectError:
        pass
    from ._autostart import start_daemon

    start_daemon(c)


@group.command("stop")
def stop_cmd(url: UrlOpt = None) -> None:
    """Stop the daemon: running turns are aborted and recorded."""
    from ._output import out

    if managed_by_systemd():
        if (result := _systemctl("stop", *UNITS)).returncode != 0:
            raise _fail(result)
        out("stopped opencoded")
        return
    _stop_local(url)


def _stop_local(url: str | None) -> None:
    from ._output import out

    endpoint = client(url).endpoint
    if endpoint.uds is None:
        raise usage_error("only the daemon on a local socket can be stopped from here")
    sock = Path(endpoint.uds)
    pid = running_pid(sock)
    if pid is None:
        out("opencoded is not running")
        return
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(sock, STOP_TIMEOUT):
        from ._output import error

        error(f"opencoded (pid {pid}) did not stop within {STOP_TIMEOUT:g} s")
        raise typer.Exit(EXIT_ERROR)
    out(f"stopped opencoded (pid {pid})")


@group.command("restart")
def restart_cmd(url: UrlOpt = None) -> None:
    """Stop and start the daemon, so it reads new provider keys and config edits.

    Without systemd the new daemon inherits this shell's environment (e.g. a freshly exported
    ANTHROPIC_API_KEY); under systemd it gets the user manager's (see `systemctl --user
    set-environment`). Running turns are aborted and recorded.
    """
    from ._output import out

    if managed_by_systemd():
        if (result := _systemctl("restart", *UNITS)).returncode != 0:
            raise _fail(result)
        out("restarted opencoded.service")
        return
    c = client(url)
    if c.endpoint.uds is None:
        raise usage_error("only the daemon on the local socket can be restarted from here")
    _stop_local(url)
    from ._autostart import start_daemon

    start_daemon(c)


@group.command("reload")
def reload_cmd(url: UrlOpt = None) -> None:
    """Re-read the config file (providers, model, permissions) without stopping turns.

    Sends SIGHUP; the daemon logs what it applied. Keys exported in a shell reach only a
    restarted daemon: use `opencode daemon restart` for those.
    """
    from ._output import out

    if managed_by_systemd():
        if (result := _systemctl("kill", "-s", "HUP", "opencoded.service")).returncode != 0:
            raise _fail(result)
        out("asked opencoded.service to reload its config (see journalctl --user -u opencoded)")
        return
    endpoint = client(url).endpoint
    if endpoint.uds is None:
        raise usage_error("only the daemon on a local socket can be reloaded from here")
    pid = running_pid(Path(endpoint.uds))
    if pid is None:
        from ._output import error

        error("opencoded is not running")
        raise typer.Exit(EXIT_ERROR)
    os.kill(pid, signal.SIGHUP)
    out(f"asked opencoded (pid {pid}) to reload its config file")


@group.command("status")
def status_cmd(url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Is the daemon running? (exit status 3 when it is not)"""
    from opencode_cli import ConnectError

    from ._output import out, print_json

    info: dict[str, object] = {"systemd": managed_by_systemd(), "units": units_installed()}
    if info["systemd"]:
        for name in UNITS:
            info[name] = _systemctl("is-active", name).stdout.strip()
    c = client(url)
    info["endpoint"] = c.endpoint.display
    if c.endpoint.uds is not None:
        info["pid"] = running_pid(Path(c.endpoint.uds))
    try:
        health = c.health()
        info.update(running=True, version=health.version, health=health.raw)
    except ConnectError:
        info["running"] = False
    if json_:
        print_json(info)
    else:
        state = "running" if info["running"] else "not running"
        out(f"opencoded: {state} on {info['endpoint']}")
        if info.get("pid"):
            out(f"pid: {info['pid']}")
        if info["running"]:
            out(f"version: {info['version']}")
        if info["systemd"]:
            for name in UNITS:
                out(f"{name}: {info[name]}")
        elif info["units"]:
            out("units installed, but no systemd user manager is reachable")
    if not info["running"]:
        raise typer.Exit(EXIT_NOT_RUNNING)


# ---- opencode sessions prune --------------------------------------------------------------

_UNITS_IN_DAYS = {"d": 1.0, "w": 7.0, "h": 1 / 24, "min": 1 / 1440}
AGE_HELP = "30d, 2w, 12h or 90min (days, weeks, hours, minutes)"


def parse_age(text: str) -> float:
    """`30d`, `2w`, `12h`, `90min`, or a plain number of days -> days.

    A bare `m` is refused: people read it as months as often as minutes.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if match is None:
        raise ValueError(f"not an age: {text!r} (use {AGE_HELP})")
    number, unit = float(match.group(1)), match.group(2) or "d"
    if unit in ("m", "mo", "month", "months"):
        raise ValueError(
            f"{text!r} is ambiguous: write {match.group(1)}min for minutes, "
            f"or days for months (e.g. {int(number * 30)}d)"
        )
    if unit not in _UNITS_IN_DAYS:
        raise ValueError(f"unknown unit {unit!r} in {text!r} (use {AGE_HELP})")
    return number * _UNITS_IN_DAYS[unit]


@_sessions.group.command("prune")
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help=f"Remove sessions not updated for this long: {AGE_HELP}."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="List what would be removed; remove nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (needed when stdin is no terminal).")
    ] = False,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Remove old sessions (not busy ones) with their messages and events.

    Asks first on a terminal; scripts pass --yes.
    """
    from opencode_cli._routes import Call

    from ._output import confirm, err, is_tty, out, print_json

    try:
        days = parse_age(older_than)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    c = client(url)
    cutoff = time.time() - days * 86400
    doomed = [
        s
        for s in c.sessions.iter(page_size=100)
        if s.status != "busy" and (s.updated or s.created or 0) < cutoff
    ]
    if dry_run:
        _print_doomed(doomed, json_)
        err(f"would remove {len(doomed)} session(s) not updated for {_span(days)}")
        return
    if not doomed:
        err("no session to remove")
        if json_:
            print_json([])
        return
    if not yes:
        if not is_tty(sys.stdin):
            raise usage_error(
                f"this removes {len(doomed)} session(s): pass --yes to confirm, "
                "or --dry-run to list them"
            )
        _print_doomed(doomed, False)
        span = _span(days)
        if not confirm(f"Remove these {len(doomed)} session(s), not updated for {span}?"):
            err("nothing removed")
            raise typer.Exit(EXIT_ERROR)
    deleted = c._call(Call("POST", "/sessions/prune", json={"older_than_days": days}))["deleted"]
    if json_:
        print_json(deleted)
        return
    for session_id in deleted:
        out(session_id)
    err(f"removed {len(deleted)} session(s)")


def _span(days: float) -> str:
    """Days in words a person checks at a glance: `6 minutes`, `12 hours`, `30 days`."""
    for size, unit in ((1.0, "day"), (1 / 24, "hour"), (1 / 1440, "minute")):
        if days >= size or unit == "minute":
            count = round(days / size, 2)
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    raise AssertionError


def _print_doomed(doomed: list, json_: bool) -> None:
    from ._output import print_json, table, when

    if json_:
        print_json([s.raw for s in doomed])
        return
    table(
        ("ID", "UPDATED", "TITLE"), [(s.id, when(s.updated or s.created), s.title) for s in doomed]
    )


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="daemon")

"""Where things live on disk, per contract section 1. Pure functions of the environment."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_DATA_DIR"):
        return Path(env["OPENCODE_DATA_DIR"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opencode"


def config_file(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_CONFIG"):
        return Path(env["OPENCODE_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opencode" / "opencode.json"


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_SOCKET"):
        return Path(env["OPENCODE_SOCKET"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "opencode" / "opencoded.sock"
    return Path(f"/tmp/opencode-{os.getuid()}") / "opencoded.sock"


def check_socket_dir(directory: Path) -> str | None:
    """Why `directory` is unsafe to hold our socket, or None when it is safe (or absent).

    Whoever owns or may write the directory can replace the socket and answer in the
    daemon's name, so like ssh-agent and tmux we refuse a directory that is a symlink, is
    not owned by us (the effective uid: root is no exception), or is group/other-writable.
    The CLI keeps a copy of this check (opencode_cli._endpoint) so it never imports us.
    """
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot inspect socket dir {directory}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"socket dir {directory} is a symlink; refusing it"
    if not stat.S_ISDIR(info.st_mode):
        return f"socket dir {directory} is not a directory"
    if info.st_uid != os.geteuid():
        return (
            f"socket dir {directory} is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}); refusing it: its owner could impersonate the daemon"
        )
    if info.st_mode & 0o022:
        return (
            f"socket dir {directory} is group/other writable (mode {info.st_mode & 0o777:o}); "
            "refusing it: run `chmod 700` on it"
        )
    return None

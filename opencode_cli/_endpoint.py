"""Finding the daemon: contract section 1 (client endpoint, client token, socket and data dir).

Kept free of httpx so the CLI can resolve an endpoint without paying for that import.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._exceptions import OpencodeError, UnsafeSocketError

# Over the unix socket the host part of the URL is only sent as the Host header; the daemon
# accepts "localhost" as a loopback name (DNS-rebinding check), so use that.
UDS_BASE_URL = "http://localhost"


@attrs.frozen
class Endpoint:
    """Where and how to reach one daemon."""

    base_url: str
    uds: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    #: True when no URL was given anywhere and this is the default socket: only then may the
    #: CLI start a daemon itself (an explicit URL names a daemon someone else runs).
    default: bool = False

    @property
    def display(self) -> str:
        return f"unix://{self.uds}" if self.uds else self.base_url


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_DATA_DIR"):
        return Path(env["OPENCODE_DATA_DIR"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opencode"


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OPENCODE_SOCKET"):
        return Path(env["OPENCODE_SOCKET"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "opencode" / "opencoded.sock"
    return Path(f"/tmp/opencode-{os.getuid()}") / "opencoded.sock"


def check_socket_dir(directory: Path) -> str | None:
    """Why the socket's directory cannot be trusted, or None (the daemon's check, copied).

    Whoever owns or may write it could have replaced the socket with their own listener,
    which would read our requests and answer in the daemon's name.
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


def ensure_safe_socket(path: str) -> None:
    """Raise OpencodeError when the socket at `path` sits in a directory we cannot trust."""
    unsafe = check_socket_dir(Path(path).parent)
    if unsafe is not None:
        raise UnsafeSocketError(unsafe)


def read_token(env: Mapping[str, str] = os.environ) -> str | None:
    """``$OPENCODE_TOKEN``, else the data dir's ``token`` file, else None (no daemon ran yet)."""
    if env.get("OPENCODE_TOKEN"):
        return env["OPENCODE_TOKEN"]
    try:
        return (data_dir(env) / "token").read_text().strip() or None
    except OSError:
        return None


def parse_url(url: str, token: str | None = None, env: Mapping[str, str] = os.environ) -> Endpoint:
    """Turn ``http://…``, ``https://…`` or ``unix:///path`` into an Endpoint.

    The token is only looked up for TCP: the socket's file mode is its access control, and not
    sending the token there keeps it off paths that do not need it.
    """
    url = url.strip()
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        path = path[2:] if path.startswith("//") else path
        if not path.startswith("/"):
            raise OpencodeError(f"unix URL needs an absolute path: {url!r}")
        return Endpoint(base_url=UDS_BASE_URL, uds=path)
    if url.startswith(("http://", "https://")):
        return Endpoint(base_url=url.rstrip("/"), token=token or read_token(env))
    raise OpencodeError(f"unsupported daemon URL {url!r} (use http://, https:// or unix:///path)")


def resolve(
    url: str | None = None, token: str | None = None, env: Mapping[str, str] = os.environ
) -> Endpoint:
    """The endpoint a client should use: the argument, else ``$OPENCODE_URL``, else the socket."""
    chosen = url or env.get("OPENCODE_URL")
    if chosen:
        return parse_url(chosen, token, env)
    return Endpoint(base_url=UDS_BASE_URL, uds=str(socket_path(env)), default=True)

"""The two systemd protocols the daemon speaks: sd_notify and socket activation.

Both are a few lines over plain sockets; no package is needed (see stack notes).
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def notify(state: str) -> bool:
    """Send a state line to the service manager when NOTIFY_SOCKET is set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def listen_fds() -> list[tuple[int, str]]:
    """Sockets passed by systemd as (fd, name); [] when not socket-activated.

    The LISTEN_* variables are removed so that commands run by tools do not inherit them.
    """
    env = os.environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(env.get("LISTEN_FDS", "0") or 0)
    names = (env.get("LISTEN_FDNAMES") or "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    fds = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        fds.append((fd, names[index] if index < len(names) else "unknown"))
    return fds

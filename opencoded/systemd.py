"""The systemd protocols the daemon speaks: sd_notify, socket activation and the watchdog.

Each is a few lines over plain sockets and environment variables; no package is needed
(see stack notes 11). All of them are no-ops when the daemon is not run by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping

import attrs
import trio

SD_LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

log = logging.getLogger(__name__)


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


@attrs.frozen
class PassedSocket:
    """A listening socket handed over by systemd."""

    fd: int
    name: str
    family: int

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX


def listen_fds(env: MutableMapping[str, str] = os.environ) -> list[PassedSocket]:
    """Sockets passed by systemd; [] when not socket-activated.

    The LISTEN_* variables are removed in every case (even when meant for another
    process), so that commands run by tools never inherit them; the fds are made
    non-inheritable for the same reason. Only stream sockets are accepted: the unit
    passes nothing else, and hypercorn would fail on them with a less clear message.
    """
    pid, count, names = (env.pop(key, None) for key in _LISTEN_VARS)
    if pid != str(os.getpid()):
        return []
    try:
        total = int(count or 0)
    except ValueError:
        raise ValueError(f"LISTEN_FDS is not a number: {count!r}") from None
    labels = (names or "").split(":")
    passed = []
    for index in range(total):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        family, kind = _socket_kind(fd)
        if kind != socket.SOCK_STREAM:
            raise ValueError(f"fd {fd} passed by systemd is not a stream socket")
        label = labels[index] if index < len(labels) and labels[index] else "unknown"
        passed.append(PassedSocket(fd, label, family))
    return passed


def _socket_kind(fd: int) -> tuple[int, int]:
    try:
        probe = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"fd {fd} passed by systemd is not a socket: {exc.strerror}") from None
    try:
        return probe.family, probe.type
    finally:
        probe.detach()  # the fd stays open for hypercorn


def watchdog_interval(env: MutableMapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when it is off."""
    usec = env.get("WATCHDOG_USEC")
    owner = env.get("WATCHDOG_PID")
    if not usec or (owner and owner != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


async def watchdog(interval: float, healthy: Callable[[], Awaitable[None]]) -> None:
    """Ping the service manager every `interval` while the daemon is healthy.

    Running in the Trio loop, a ping proves the loop is not stuck; `healthy()` (the
    store's ping) proves the database answers. When it fails or hangs we skip the ping
    and let systemd restart us after WatchdogSec, which is what a wedged writer needs.
    """
    while True:
        try:
            with trio.fail_after(interval):
                await healthy()
        except Exception as exc:  # TooSlowError or StoreError: both mean "do not ping"
            log.warning("watchdog: not healthy, skipping the ping: %s", exc)
        else:
            notify("WATCHDOG=1")
        await trio.sleep(interval)

"""Bytes after a refused WebSocket handshake, on the same connection, must not kill the daemon."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.cli_support import DaemonProcess, rmtree, start_daemon

UPGRADE = (
    b"GET /sessions/session_nope/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
NEXT = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
def daemon() -> Iterator[DaemonProcess]:
    d = start_daemon()
    yield d
    d.stop()
    rmtree(d.tmp)


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_pipelined_bytes_after_a_refused_handshake(daemon: DaemonProcess, where: str) -> None:
    for _ in range(5):
        if where == "tcp":
            url = urlparse(daemon.tcp_url)
            conn = socket.create_connection((url.hostname, url.port), timeout=10)
        else:
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(10)
            conn.connect(str(daemon.socket))
        with conn:
            conn.sendall(UPGRADE + NEXT)
            assert conn.recv(65536).startswith(b"HTTP/1.1 4")
    assert daemon.proc.poll() is None, daemon.stderr.text
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(10)
        probe.connect(str(daemon.socket))
        probe.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert probe.recv(65536).startswith(b"HTTP/1.1 200")

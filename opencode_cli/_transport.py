"""Blocking transports for the sync ``Client``: the protocol, and a stdlib one.

The default transport is httpx (``_client.HttpxTransport``). This stdlib one exists for the CLI:
in this venv, a request through httpx's sync transport imports trio, anyio and h2 (httpcore probes
for them) and httpx itself imports click and rich, about 150 ms before the first byte; http.client
over AF_UNIX costs a few ms and streams chunked NDJSON just as promptly (stack notes 7 and 9).
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import socket
from collections.abc import Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from ._endpoint import Endpoint, ensure_safe_socket
from ._exceptions import ConnectError, ProtocolError, TransportError, error_from_response

CONNECT_TIMEOUT = 5.0


class SyncTransport(Protocol):
    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> bytes:
        """Send one request; return the body of a 2xx answer, raise APIError otherwise."""
        ...

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractContextManager[Iterator[str]]:
        """Open a streamed request with no read timeout and yield its lines."""
        ...

    def close(self) -> None: ...


class _OneWrite:
    """Send the request line, headers and a bytes body in one write.

    http.client writes the body separately; a daemon that answers without reading it (an
    abort, a 413) and closes the connection then made that second write fail with EPIPE.
    (`_send_output` and `_buffer` are http.client's own; this is the smallest override.)
    """

    _buffer: list[bytes]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", b""))
            request = b"\r\n".join(self._buffer) + message_body
            del self._buffer[:]
            self.send(request)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class _UnixHTTPConnection(_OneWrite, http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        ensure_safe_socket(self._path)  # again at connect: the dir may be new since resolve()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _target(path: str, params: Mapping[str, Any] | None) -> str:
    return f"{path}?{urlencode(params)}" if params else path


class StdlibTransport:
    """One connection per request: over a local socket that costs microseconds, and it lets a
    permission answer or an abort go out while another thread holds a stream open."""

    def __init__(self, endpoint: Endpoint, timeout: float | None = 30.0) -> None:
        if endpoint.uds:
            # Also guards what the CLI reads next to the socket (the pid in its lock file).
            ensure_safe_socket(endpoint.uds)
        self.endpoint = endpoint
        self.timeout = timeout
        parts = urlsplit(endpoint.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")

    def _connect(self) -> http.client.HTTPConnection:
        if self.endpoint.uds:
            conn: http.client.HTTPConnection = _UnixHTTPConnection(
                self.endpoint.uds, CONNECT_TIMEOUT
            )
        elif self._https:
            conn = _HTTPSConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        else:
            conn = _HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ConnectError(f"cannot reach opencoded at {self.endpoint.display}: {exc}") from exc
        return conn

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        read_timeout: float | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connect()
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.endpoint.token and not self.endpoint.uds:
            hdrs["Authorization"] = f"Bearer {self.endpoint.token}"
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            if conn.sock is not None:
                conn.sock.settimeout(read_timeout)
            # If the daemon answered before taking it all (a 413), read that answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, self._prefix + _target(path, params), body=body, headers=hdrs)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"{method} {path}: {exc}") from exc
        if resp.status >= 400:
            try:
                data = resp.read()
            except (OSError, http.client.HTTPException):
                data = b""
            conn.close()
            raise error_from_response(resp.status, data, dict(resp.getheaders()))
        return conn, resp

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> bytes:
        conn, resp = self._send(method, path, params, json, None, self.timeout)
        try:
            return resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ProtocolError(f"{method} {path}: answer cut short: {exc}") from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[Iterator[str]]:
        conn, resp = self._send(method, path, params, json, headers, None)
        try:
            yield _lines(resp, f"{method} {path}")
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing is pooled."""


def _lines(resp: http.client.HTTPResponse, what: str) -> Iterator[str]:
    while True:
        try:
            line = resp.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise ProtocolError(f"{what}: stream broken: {exc}") from exc
        if not line:
            return
        yield line.decode("utf-8", "replace").rstrip("\r\n")

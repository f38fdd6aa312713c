"""The blocking client: ``Client`` and its resource groups.

Shape follows the spec's Python example::

    client = Client("http://localhost:8080")
    session = client.sessions.create(provider="anthropic", model="claude-3-5-sonnet")
    for event in client.sessions.message(session.id, text="Add tests"):
        print(event)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import _routes as r
from ._endpoint import Endpoint, ensure_safe_socket, resolve
from ._exceptions import (
    ConnectError,
    ProtocolError,
    TransportError,
    error_from_response,
)
from ._models import (
    Accepted,
    Event,
    FileEntry,
    Health,
    Message,
    Model,
    Permission,
    Project,
    Provider,
    Session,
)
from ._transport import CONNECT_TIMEOUT, StdlibTransport, SyncTransport
from ._wire import SSEParser, parse_ndjson

if TYPE_CHECKING:
    import httpx

Backend = Literal["httpx", "stdlib"]


class HttpxTransport:
    """The default transport: one pooled ``httpx.Client``."""

    def __init__(self, endpoint: Endpoint, timeout: float | None = 30.0) -> None:
        import httpx

        self._httpx = httpx
        headers = {"Accept": "application/json"}
        if endpoint.token and not endpoint.uds:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        if endpoint.uds:
            ensure_safe_socket(endpoint.uds)
        transport = httpx.HTTPTransport(uds=endpoint.uds) if endpoint.uds else None
        # trust_env=False: HTTP_PROXY would otherwise be applied to 127.0.0.1 (stack notes 7).
        self._client = httpx.Client(
            base_url=endpoint.base_url,
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(CONNECT_TIMEOUT, read=timeout),
            trust_env=False,
        )
        self.endpoint = endpoint

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        httpx = self._httpx
        try:
            yield
        except httpx.ConnectError as exc:
            raise ConnectError(f"cannot reach opencoded at {self.endpoint.display}: {exc}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ProtocolError(f"{what}: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"{what}: {exc}") from exc

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> bytes:
        with self._errors(f"{method} {path}"):
            resp = self._client.request(method, path, params=params, json=json)
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content, resp.headers)
        return resp.content

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
        what = f"{method} {path}"
        timeout = self._httpx.Timeout(CONNECT_TIMEOUT, read=None)
        with self._errors(what):
            cm = self._client.stream(
                method, path, params=params, json=json, headers=headers, timeout=timeout
            )
            resp = cm.__enter__()
        try:
            if resp.status_code >= 400:
                with self._errors(what):
                    resp.read()
                raise error_from_response(resp.status_code, resp.content, resp.headers)
            yield self._lines(resp, what)
        finally:
            cm.__exit__(None, None, None)

    def _lines(self, resp: httpx.Response, what: str) -> Iterator[str]:
        with self._errors(what):
            yield from resp.iter_lines()

    def close(self) -> None:
        self._client.close()


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


class Sessions(_Resource):
    def create(
        self,
        *,
        provider: str | None = None,
        model: str | None = None,
        directory: str | None = None,
        project: str | None = None,
        title: str | None = None,
        permission: Mapping[str, str] | None = None,
    ) -> Session:
        return self._client._call(
            r.session_create(
                provider=provider,
                model=model,
                directory=directory,
                project=project,
                title=title,
                permission=dict(permission) if permission else None,
            )
        )

    def list(
        self, *, limit: int | None = None, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        """One page, newest first; pass the last id as ``before`` for the next page."""
        return self._client._call(r.session_list(limit, before, project))

    def iter(self, *, project: str | None = None, page_size: int = 100) -> Iterator[Session]:
        """Every session, newest first, fetching pages as needed."""
        before = None
        while True:
            page = self.list(limit=page_size, before=before, project=project)
            yield from page
            if len(page) < page_size:
                return
            before = page[-1].id

    def get(self, session_id: str) -> Session:
        return self._client._call(r.session_get(session_id))

    def delete(self, session_id: str) -> None:
        self._client._call(r.session_delete(session_id))

    def abort(self, session_id: str) -> bool:
        """Cancel the running turn; False when none was running."""
        return self._client._call(r.session_abort(session_id))

    def todo(self, session_id: str) -> list[dict[str, Any]]:
        """The session's task list (kept by the agent's todo tools)."""
        return self._client._call(r.session_todo(session_id))

    def messages(self, session_id: str) -> list[Message]:
        return self._client._call(r.session_messages(session_id))

    def message(
        self,
        session_id: str,
        text: str | None = None,
        *,
        parts: Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[Event]:
        """Send a message and yield the turn's events as they stream; ``complete`` comes last."""
        call = r.message_stream(session_id, r.text_parts(text, parts))
        with self._client._transport.stream(
            call.method, call.path, json=call.json, headers={"Accept": "application/x-ndjson"}
        ) as lines:
            for line in lines:
                event = parse_ndjson(line)
                if event is not None:
                    yield event

    def submit(
        self,
        session_id: str,
        text: str | None = None,
        *,
        parts: Sequence[Mapping[str, Any]] | None = None,
    ) -> Accepted:
        """Start a turn without waiting for it (202); follow it with :meth:`events`."""
        return self._client._call(r.message_submit(session_id, r.text_parts(text, parts)))

    def events(
        self,
        session_id: str,
        after: int | None = None,
        *,
        until_complete: bool = False,
        reconnect_timeout: float = 30.0,
    ) -> Iterator[Event]:
        """Follow the session's event log over SSE, from after ``after``.

        When the connection drops, reconnects with ``after=`` the last seq seen, so nothing is
        missed or repeated; gives up with ConnectError after ``reconnect_timeout`` seconds without
        a connection. With ``until_complete`` it stops after the next ``complete`` event.
        """
        last = after
        failing_since: float | None = None
        delay = 0.1
        while True:
            call = r.events(session_id, last)
            parser = SSEParser()
            try:
                with self._client._transport.stream(
                    call.method,
                    call.path,
                    params=call.params,
                    headers={"Accept": "text/event-stream"},
                ) as lines:
                    failing_since, delay = None, 0.1
                    for line in lines:
                        event = parser.feed(line)
                        if event is None:
                            continue
                        if event.seq is not None:
                            last = event.seq
                        yield event
                        if until_complete and event.type == "complete":
                            return
            except TransportError:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_timeout:
                    raise
            if parser.retry_ms is not None:
                delay = parser.retry_ms / 1000
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Permissions(_Resource):
    def list(self, session_id: str) -> list[Permission]:
        return self._client._call(r.permission_list(session_id))

    def respond(self, session_id: str, permission_id: str, response: r.PermissionResponse) -> None:
        self._client._call(r.permission_respond(session_id, permission_id, response))


class Projects(_Resource):
    def list(self) -> list[Project]:
        return self._client._call(r.project_list())

    def create(self, name: str, path: str) -> Project:
        return self._client._call(r.project_create(name, path))

    def get(self, project_id: str) -> Project:
        return self._client._call(r.project_get(project_id))

    def delete(self, project_id: str) -> None:
        self._client._call(r.project_delete(project_id))


class Files(_Resource):
    def list(self, project_id: str, path: str | None = None) -> list[FileEntry]:
        return self._client._call(r.file_list(project_id, path))

    def read(self, project_id: str, path: str) -> str:
        return self._client._call(r.file_read(project_id, path))


class Client:
    """A blocking client for one opencoded.

    ``url``: ``http://…``, ``https://…`` or ``unix:///path``; default ``$OPENCODE_URL``, else the
    default socket. ``token``: default ``$OPENCODE_TOKEN``, else the data dir's token file; only
    sent over TCP. ``backend="stdlib"`` uses http.client instead of httpx (what the CLI does).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        backend: Backend = "httpx",
    ) -> None:
        self.endpoint = resolve(url, token)
        if backend == "httpx":
            self._transport: SyncTransport = HttpxTransport(self.endpoint, timeout)
        elif backend == "stdlib":
            self._transport = StdlibTransport(self.endpoint, timeout)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        self.sessions = Sessions(self)
        self.permissions = Permissions(self)
        self.projects = Projects(self)
        self.files = Files(self)

    def _call(self, call: r.Call) -> Any:
        body = self._transport.request(call.method, call.path, params=call.params, json=call.json)
        return r.decode(call, body)

    def health(self) -> Health:
        return self._call(r.health())

    def providers(self) -> list[Provider]:
        return self._call(r.providers())

    def models(self) -> list[Model]:
        return self._call(r.models())

    def mcp_servers(self) -> list[dict[str, Any]]:
        """The MCP servers: status, error and tools."""
        return self._call(r.mcp_list())

    def mcp_restart(self, name: str) -> dict[str, Any]:
        """Reconnect one MCP server; its new state once connected or failed."""
        return self._call(r.mcp_restart(name))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.endpoint.display!r})"

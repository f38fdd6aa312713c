"""The async twin of ``Client``: same resources, same arguments, ``await``/``async for``.

Built on ``httpx.AsyncClient``, which runs under Trio (and asyncio) through anyio::

    async with AsyncClient() as client:
        session = await client.sessions.create(directory=".")
        async for event in client.sessions.message(session.id, text="Add tests"):
            ...
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import anyio
import httpx

from . import _routes as r
from ._endpoint import Endpoint, ensure_safe_socket, resolve
from ._exceptions import ConnectError, ProtocolError, TransportError, error_from_response
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
from ._transport import CONNECT_TIMEOUT
from ._wire import SSEParser, parse_ndjson


class _AsyncTransport:
    def __init__(self, endpoint: Endpoint, timeout: float | None) -> None:
        headers = {"Accept": "application/json"}
        if endpoint.token and not endpoint.uds:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        if endpoint.uds:
            ensure_safe_socket(endpoint.uds)
        transport = httpx.AsyncHTTPTransport(uds=endpoint.uds) if endpoint.uds else None
        self._client = httpx.AsyncClient(
            base_url=endpoint.base_url,
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(CONNECT_TIMEOUT, read=timeout),
            trust_env=False,
        )
        self.endpoint = endpoint

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise ConnectError(f"cannot reach opencoded at {self.endpoint.display}: {exc}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ProtocolError(f"{what}: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"{what}: {exc}") from exc

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> bytes:
        with self._errors(f"{method} {path}"):
            resp = await self._client.request(method, path, params=params, json=json)
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content, resp.headers)
        return resp.content

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[AsyncIterator[str]]:
        what = f"{method} {path}"
        timeout = httpx.Timeout(CONNECT_TIMEOUT, read=None)
        request = self._client.build_request(
            method, path, params=params, json=json, headers=headers, timeout=timeout
        )
        with self._errors(what):
            resp = await self._client.send(request, stream=True)
        try:
            if resp.status_code >= 400:
                with self._errors(what):
                    await resp.aread()
                raise error_from_response(resp.status_code, resp.content, resp.headers)
            # Closed with the stream, read to its end or not: not left to the GC.
            async with contextlib.aclosing(self._lines(resp, what)) as lines:
                yield lines
        finally:
            await resp.aclose()

    async def _lines(self, resp: httpx.Response, what: str) -> AsyncIterator[str]:
        with self._errors(what):
            async for line in resp.aiter_lines():
                yield line

    async def aclose(self) -> None:
        await self._client.aclose()


class _Resource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client


class AsyncSessions(_Resource):
    async def create(
        self,
        *,
        provider: str | None = None,
        model: str | None = None,
        directory: str | None = None,
        project: str | None = None,
        title: str | None = None,
        permission: Mapping[str, str] | None = None,
    ) -> Session:
        return await self._client._call(
            r.session_create(
                provider=provider,
                model=model,
                directory=directory,
                project=project,
                title=title,
                permission=dict(permission) if permission else None,
            )
        )

    async def list(
        self, *, limit: int | None = None, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        return await self._client._call(r.session_list(limit, before, project))

    async def iter(
        self, *, project: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Session]:
        before = None
        while True:
            page = await self.list(limit=page_size, before=before, project=project)
            for session in page:
                yield session
            if len(page) < page_size:
                return
            before = page[-1].id

    async def get(self, session_id: str) -> Session:
        return await self._client._call(r.session_get(session_id))

    async def delete(self, session_id: str) -> None:
        await self._client._call(r.session_delete(session_id))

    async def abort(self, session_id: str) -> bool:
        return await self._client._call(r.session_abort(session_id))

    async def todo(self, session_id: str) -> list[dict[str, Any]]:
        return await self._client._call(r.session_todo(session_id))

    async def messages(self, session_id: str) -> list[Message]:
        return await self._client._call(r.session_messages(session_id))

    async def message(
        self,
        session_id: str,
        text: str | None = None,
        *,
        parts: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[Event]:
        call = r.message_stream(session_id, r.text_parts(text, parts))
        async with self._client._transport.stream(
            call.method, call.path, json=call.json, headers={"Accept": "application/x-ndjson"}
        ) as lines:
            async for line in lines:
                event = parse_ndjson(line)
                if event is not None:
                    yield event

    async def submit(
        self,
        session_id: str,
        text: str | None = None,
        *,
        parts: Sequence[Mapping[str, Any]] | None = None,
    ) -> Accepted:
        return await self._client._call(r.message_submit(session_id, r.text_parts(text, parts)))

    async def events(
        self,
        session_id: str,
        after: int | None = None,
        *,
        until_complete: bool = False,
        reconnect_timeout: float = 30.0,
    ) -> AsyncIterator[Event]:
        """Follow the SSE event log, resuming from the last seq after a disconnect."""
        last = after
        failing_since: float | None = None
        delay = 0.1
        while True:
            call = r.events(session_id, last)
            parser = SSEParser()
            try:
                async with self._client._transport.stream(
                    call.method,
                    call.path,
                    params=call.params,
                    headers={"Accept": "text/event-stream"},
                ) as lines:
                    failing_since, delay = None, 0.1
                    async for line in lines:
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
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)


class AsyncPermissions(_Resource):
    async def list(self, session_id: str) -> list[Permission]:
        return await self._client._call(r.permission_list(session_id))

    async def respond(
        self, session_id: str, permission_id: str, response: r.PermissionResponse
    ) -> None:
        await self._client._call(r.permission_respond(session_id, permission_id, response))


class AsyncProjects(_Resource):
    async def list(self) -> list[Project]:
        return await self._client._call(r.project_list())

    async def create(self, name: str, path: str) -> Project:
        return await self._client._call(r.project_create(name, path))

    async def get(self, project_id: str) -> Project:
        return await self._client._call(r.project_get(project_id))

    async def delete(self, project_id: str) -> None:
        await self._client._call(r.project_delete(project_id))


class AsyncFiles(_Resource):
    async def list(self, project_id: str, path: str | None = None) -> list[FileEntry]:
        return await self._client._call(r.file_list(project_id, path))

    async def read(self, project_id: str, path: str) -> str:
        return await self._client._call(r.file_read(project_id, path))


class AsyncClient:
    """The async client; arguments as for :class:`opencode_cli.Client`."""

    def __init__(
        self, url: str | None = None, *, token: str | None = None, timeout: float | None = 30.0
    ) -> None:
        self.endpoint = resolve(url, token)
        self._transport = _AsyncTransport(self.endpoint, timeout)
        self.sessions = AsyncSessions(self)
        self.permissions = AsyncPermissions(self)
        self.projects = AsyncProjects(self)
        self.files = AsyncFiles(self)

    async def _call(self, call: r.Call) -> Any:
        body = await self._transport.request(
            call.method, call.path, params=call.params, json=call.json
        )
        return r.decode(call, body)

    async def health(self) -> Health:
        return await self._call(r.health())

    async def providers(self) -> list[Provider]:
        return await self._call(r.providers())

    async def models(self) -> list[Model]:
        return await self._call(r.models())

    async def mcp_servers(self) -> list[dict[str, Any]]:
        return await self._call(r.mcp_list())

    async def mcp_restart(self, name: str) -> dict[str, Any]:
        return await self._call(r.mcp_restart(name))

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.endpoint.display!r})"

"""Every route as data: method, path, query, body and how to read the answer.

The sync and async clients both call these, so the two twins cannot drift apart in what they send;
each only adds its own way of doing I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import attrs

from . import _models as m
from ._exceptions import ProtocolError

PermissionResponse = Literal["once", "always", "reject"]


def _identity(value: Any) -> Any:
    return value


@attrs.frozen
class Call:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    #: How to turn the decoded answer into the return value.
    parse: Callable[[Any], Any] = _identity
    #: The answer is text/plain (file content), not JSON.
    text: bool = False


def _seg(value: str) -> str:
    """One path segment; ids come from users and must not be able to add path components."""
    return quote(str(value), safe="")


def _params(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def text_parts(text: str | None, parts: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if (text is None) == (parts is None):
        raise TypeError("give exactly one of text= or parts=")
    if text is not None:
        return [{"type": "text", "text": text}]
    return [dict(p) for p in parts or ()]


def health() -> Call:
    return Call("GET", "/health", parse=lambda d: m.build(m.Health, d))


def providers() -> Call:
    return Call("GET", "/providers", parse=lambda d: m.build_list(m.Provider, d))


def models() -> Call:
    return Call("GET", "/models", parse=lambda d: m.build_list(m.Model, d))


def session_create(**fields: Any) -> Call:
    return Call("POST", "/sessions", json=_params(**fields), parse=lambda d: m.build(m.Session, d))


def session_list(limit: int | None, before: str | None, project: str | None) -> Call:
    return Call(
        "GET",
        "/sessions",
        params=_params(limit=limit, before=before, project=project),
        parse=lambda d: m.build_list(m.Session, d),
    )


def session_get(session_id: str) -> Call:
    return Call("GET", f"/sessions/{_seg(session_id)}", parse=lambda d: m.build(m.Session, d))


def session_delete(session_id: str) -> Call:
    return Call("DELETE", f"/sessions/{_seg(session_id)}", parse=lambda d: None)


def session_abort(session_id: str) -> Call:
    return Call(
        "POST",
        f"/sessions/{_seg(session_id)}/abort",
        json={},
        parse=lambda d: bool(d.get("aborted")) if isinstance(d, dict) else False,
    )


def session_messages(session_id: str) -> Call:
    return Call(
        "GET",
        f"/sessions/{_seg(session_id)}/messages",
        parse=lambda d: m.build_list(m.Message, d),
    )


def message_stream(session_id: str, parts: list[dict[str, Any]]) -> Call:
    """The streaming POST; its answer is read line by line, not parsed here."""
    return Call("POST", f"/sessions/{_seg(session_id)}/messages", json={"parts": parts})


def message_submit(session_id: str, parts: list[dict[str, Any]]) -> Call:
    return Call(
        "POST",
        f"/sessions/{_seg(session_id)}/messages",
        json={"parts": parts, "async": True},
        parse=lambda d: m.build(m.Accepted, d),
    )


def events(session_id: str, after: int | None) -> Call:
    return Call("GET", f"/sessions/{_seg(session_id)}/events", params=_params(after=after))


def permission_list(session_id: str) -> Call:
    return Call(
        "GET",
        f"/sessions/{_seg(session_id)}/permissions",
        parse=lambda d: m.build_list(m.Permission, d),
    )


def permission_respond(session_id: str, permission_id: str, response: str) -> Call:
    if response not in ("once", "always", "reject"):
        raise ValueError(f"response must be 'once', 'always' or 'reject', not {response!r}")
    return Call(
        "POST",
        f"/sessions/{_seg(session_id)}/permissions/{_seg(permission_id)}",
        json={"response": response},
        parse=lambda d: None,
    )


def project_list() -> Call:
    return Call("GET", "/projects", parse=lambda d: m.build_list(m.Project, d))


def project_create(name: str, path: str) -> Call:
    body = {"name": name, "path": path}
    return Call("POST", "/projects", json=body, parse=lambda d: m.build(m.Project, d))


def project_get(project_id: str) -> Call:
    return Call("GET", f"/projects/{_seg(project_id)}", parse=lambda d: m.build(m.Project, d))


def project_delete(project_id: str) -> Call:
    return Call("DELETE", f"/projects/{_seg(project_id)}", parse=lambda d: None)


def file_list(project_id: str, path: str | None) -> Call:
    return Call(
        "GET",
        f"/projects/{_seg(project_id)}/files",
        params=_params(path=path),
        parse=lambda d: m.build_list(m.FileEntry, d),
    )


def file_read(project_id: str, path: str) -> Call:
    return Call(
        "GET", f"/projects/{_seg(project_id)}/files/content", params={"path": path}, text=True
    )


def session_todo(session_id: str) -> Call:
    """The session's task list: [{content, status}] (plain dicts)."""
    return Call("GET", f"/sessions/{_seg(session_id)}/todo")


def mcp_list() -> Call:
    """The MCP servers, as the daemon describes them (plain dicts; see docs/api.md)."""
    return Call("GET", "/mcp")


def mcp_restart(name: str) -> Call:
    return Call("POST", f"/mcp/{_seg(name)}/restart")


def decode(call: Call, body: bytes) -> Any:
    """Decode a 2xx answer for ``call``: an empty body (204) is None."""
    if call.text:
        return body.decode("utf-8", "replace")
    if not body.strip():
        return call.parse(None)
    import json

    try:
        data = json.loads(body)
    except ValueError:
        raise ProtocolError(f"{call.method} {call.path}: answer is not JSON") from None
    return call.parse(data)

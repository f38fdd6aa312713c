"""The webfetch tool against a local HTTP server: conversion, limits, refused addresses.

Loopback is refused by default, so the positive cases set `allowPrivate`; the refusals
are checked to happen before any connection (the server sees no request). Private and
link-local ranges are only checked as addresses: no test sends traffic to them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from opencoded.config import WebfetchConfig
from opencoded.tools import TOOLS, ToolContext, run_tool
from opencoded.tools.webfetch import public_address
from tests.conftest import short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
from tests.test_agent import TurnStream, message_body, new_session, of_type, provider_config

PAGE = """<!doctype html><html><head><title>Docs</title><style>p {color: red}</style>
<script>alert("no")</script></head><body><h1>Install</h1>
<p>Run <code>pip install thing</code>, then read <a href="/guide">the guide</a>.</p>
<ul><li>fast</li><li>small</li></ul></body></html>"""


@attrs.define
class LocalWeb:
    port: int
    hits: list[tuple[str, dict[str, str]]] = attrs.Factory(list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


async def _serve(web: LocalWeb, stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        data += chunk
    request_line, *lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
    path = request_line.split()[1]
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    web.hits.append((path, headers))
    if path == "/page":
        reply = _response("200 OK", PAGE.encode(), "text/html; charset=utf-8")
    elif path == "/host":
        reply = _response("200 OK", headers["host"].encode(), "text/plain")
    elif path == "/moved":
        reply = _response("302 Found", b"", "text/plain", "Location: /page\r\n")
    elif path == "/big":
        reply = _response("200 OK", b"x" * 5000, "text/plain")
    elif path == "/big-chunked":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        reply = head + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    elif path == "/png":
        reply = _response("200 OK", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")
    elif path == "/slow":
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
        await trio.sleep_forever()
    else:
        reply = _response("404 Not Found", b"nope", "text/plain")
    await stream.send_all(reply)
    await stream.aclose()


@pytest.fixture
async def web(nursery: trio.Nursery) -> LocalWeb:
    holder: list[LocalWeb] = []

    async def handler(stream: trio.SocketStream) -> None:
        await _serve(holder[0], stream)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    holder.append(LocalWeb(listeners[0].socket.getsockname()[1]))
    return holder[0]


def ctx(tmp_path: Path, **settings: Any) -> ToolContext:
    return ToolContext(root=tmp_path, webfetch=WebfetchConfig(**settings))


async def fetch(url: str, context: ToolContext, **args: Any) -> tuple[str, bool]:
    out = await run_tool("webfetch", {"url": url, **args}, context)
    return out.output, out.error


async def test_html_becomes_markdown(web: LocalWeb, tmp_path: Path) -> None:
    text, error = await fetch(web.url("/page"), ctx(tmp_path, allow_private=True))
    assert not error, text
    assert "# Install" in text
    assert "Run `pip install thing`, then read [the guide](/guide)." in text
    assert "* fast\n* small" in text
    assert "alert" not in text and "color: red" not in text


async def test_text_and_html_formats(web: LocalWeb, tmp_path: Path) -> None:
    context = ctx(tmp_path, allow_private=True)
    text, _ = await fetch(web.url("/page"), context, format="text")
    assert "Install" in text and "#" not in text and "<" not in text
    assert "alert" not in text
    html, _ = await fetch(web.url("/page"), context, format="html")
    assert html == PAGE
    bad, error = await fetch(web.url("/page"), context, format="pdf")
    assert error and "format" in bad


async def test_redirect_followed_and_host_kept(web: LocalWeb, tmp_path: Path) -> None:
    context = ctx(tmp_path, allow_private=True)
    text, error = await fetch(web.url("/moved"), context)
    assert not error and "# Install" in text
    assert [path for path, _ in web.hits] == ["/moved", "/page"]
    # The connection goes to the checked address; the name stays in the Host header.
    host, error = await fetch(web.url("/host", host="localhost"), context)
    assert not error and host == f"localhost:{web.port}"


async def test_size_limit(web: LocalWeb, tmp_path: Path) -> None:
    context = ctx(tmp_path, allow_private=True, max_bytes=1000)
    text, error = await fetch(web.url("/big"), context)
    assert error and "too large (5000 bytes; the limit is 1000)" in text
    text, error = await fetch(web.url("/big-chunked"), context)
    assert error and "too large (over 1000 bytes)" in text


async def test_timeout(web: LocalWeb, tmp_path: Path) -> None:
    text, error = await fetch(web.url("/slow"), ctx(tmp_path, allow_private=True, timeout=0.3))
    assert error and "timed out after 0.3 s" in text


async def test_not_text_is_refused(web: LocalWeb, tmp_path: Path) -> None:
    text, error = await fetch(web.url("/png"), ctx(tmp_path, allow_private=True))
    assert error and "image/png" in text
    text, error = await fetch(web.url("/missing"), ctx(tmp_path, allow_private=True))
    assert error and "HTTP 404" in text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_loopback_refused_by_default(web: LocalWeb, tmp_path: Path, host: str) -> None:
    text, error = await fetch(web.url("/page", host=host), ctx(tmp_path))
    assert error and text.startswith("refused:") and "allowPrivate" in text
    assert web.hits == []  # refused before connecting


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"])
async def test_only_http_and_https(tmp_path: Path, url: str) -> None:
    text, error = await fetch(url, ctx(tmp_path, allow_private=True))
    assert error and "only http and https" in text


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_classes(address: str, public: bool) -> None:
    assert public_address(address) is public


def test_webfetch_is_registered() -> None:
    assert TOOLS["webfetch"].input_schema["required"] == ["url"]


# ---- through a turn: permission `ask` by default --------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


async def test_webfetch_in_a_turn_asks_first(
    nursery: trio.Nursery, fake: FakeLLM, web: LocalWeb, project_dir: Path
) -> None:
    config = provider_config(fake, webfetch={"allowPrivate": True})
    running = await start_daemon(nursery, short_tmp(), config)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "webfetch", {"url": web.url("/page")})]),
        Reply(text=["read it"]),
    )
    async with running.unix() as client, running.unix() as other:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("read the docs")) as r:
            stream = TurnStream(r)
            asked = await stream.until("permission")
            assert asked["data"]["tool"] == "webfetch"
            assert web.hits == []  # nothing fetched before the answer
            pid = asked["data"]["id"]
            await other.post(f"/sessions/{sid}/permissions/{pid}", json={"response": "once"})
            events = await stream.rest()
    result = of_type(events, "tool-result")[0]
    assert result["error"] is False and "# Install" in result["output"]
    assert fake.requests[1].body["messages"][-1]["content"][0]["content"] == result["output"]
    await running.shutdown()

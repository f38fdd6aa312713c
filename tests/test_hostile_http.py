"""Hostile requests against a real daemon (issue 10, "server errors and lax parsing").

Every body is sent as raw bytes, the way an attacker sends it: a JSON text with a lone
surrogate escape (`"\\ud800"`) cannot even be produced by httpx's `json=`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_ws import WebSocketUpgradeError, aconnect_ws

from opencoded.http.security import Policy
from opencoded.providers import _errors
from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, open_fake_llm

JSON = {"Content-Type": "application/json"}


def provider_config(fake: FakeLLM) -> dict[str, Any]:
    return {
        "model": "anthropic/claude-sonnet-5-5",
        "provider": {"anthropic": {"options": {"apiKey": "sk-ant-test", "baseURL": fake.url}}},
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


@pytest.fixture
async def agent(nursery: trio.Nursery, fake: FakeLLM) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, short_tmp(), provider_config(fake))
    yield running
    await running.shutdown()


async def new_session(c: httpx.AsyncClient, directory: Path) -> str:
    r = await c.post("/sessions", json={"directory": str(directory)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def body_routes(sid: str) -> list[str]:
    return [
        "/sessions",
        "/projects",
        "/sessions/prune",
        f"/sessions/{sid}/messages",
        f"/sessions/{sid}/permissions/perm_nope",
    ]


def assert_invalid(r: httpx.Response, field: str | None = None, status: int = 400) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == "INVALID_REQUEST", error
    if field is not None:
        assert error["details"]["field"] == field, error


# ---- nesting and surrogates ------------------------------------------------------------------


async def test_deeply_nested_json_is_a_400_on_every_body_route(
    agent: RunningDaemon, project_dir: Path
) -> None:
    async with agent.unix() as c:
        sid = await new_session(c, project_dir)
        for depth in (1_000, 100_000):
            arrays = "[" * depth + "]" * depth
            for body in (arrays, '{"title": ' + arrays + "}"):
                for path in body_routes(sid):
                    assert_invalid(await c.post(path, content=body, headers=JSON))


async def test_deeply_nested_websocket_frame_is_an_error_frame(
    agent: RunningDaemon, project_dir: Path
) -> None:
    async with agent.unix() as c:
        sid = await new_session(c, project_dir)
        async with aconnect_ws(f"http://localhost/sessions/{sid}/stream", c) as ws:
            await ws.send_text("[" * 5000 + "]" * 5000)
            frame = json.loads(await ws.receive_text())
            assert frame["type"] == "error" and frame["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"title": "a\\ud800b"}', "title"),
        ('{"model": "\\udfff"}', "model"),
        ('{"permission": {"\\ud800": "allow"}}', "permission"),
        ('{"directory": "/tmp/\\ud83d"}', "directory"),
    ],
)
async def test_lone_surrogate_in_a_session_field_is_a_400_naming_it(
    daemon: RunningDaemon, body: str, field: str
) -> None:
    async with daemon.unix() as c:
        r = await c.post("/sessions", content=body, headers=JSON)
        assert_invalid(r)
        assert r.json()["error"]["details"]["field"].startswith(field)
        assert (await c.get("/sessions")).json() == []
        r = await c.post("/projects", content='{"name": "\\ud800", "path": "/tmp"}', headers=JSON)
        assert_invalid(r, "name")


async def test_a_surrogate_in_a_message_is_refused_and_never_stored(
    agent: RunningDaemon, fake: FakeLLM, project_dir: Path
) -> None:
    async with agent.unix() as c:
        sid = await new_session(c, project_dir)
        body = '{"parts": [{"type": "text", "text": "hi \\ud800 there"}]}'
        r = await c.post(f"/sessions/{sid}/messages", content=body, headers=JSON)
        assert_invalid(r, "parts[0].text")
        async with aconnect_ws(f"http://localhost/sessions/{sid}/stream", c) as ws:
            await ws.send_text('{"type": "message", "content": "x\\udc00"}')
            frame = json.loads(await ws.receive_text())
            assert frame["type"] == "error" and frame["details"]["field"] == "content"
            await ws.send_text(
                '{"type": "message", "parts": [{"type": "text", "text": "\\ud800"}]}'
            )
            frame = json.loads(await ws.receive_text())
            assert frame["type"] == "error" and frame["details"]["field"] == "parts[0].text"
        assert (await c.get(f"/sessions/{sid}/messages")).json() == []
        assert fake.requests == []
        # The session is not poisoned: a good message still runs a turn.
        r = await c.post(
            f"/sessions/{sid}/messages", json={"parts": [{"type": "text", "text": "hello"}]}
        )
        events = [json.loads(line) for line in r.text.splitlines()]
        assert [e["type"] for e in events][-1] == "complete"
        assert "error" not in [e["type"] for e in events]


def test_provider_error_text_never_carries_the_request() -> None:
    import anthropic

    request = json.dumps({"messages": [{"content": "SECRET PROMPT " * 500}]})
    exc = UnicodeEncodeError("utf-8", request, 10, 11, "surrogates not allowed")
    err = _errors.from_sdk(
        "anthropic", anthropic, exc, transport_error=OSError, key_hint="ANTHROPIC_API_KEY"
    )
    assert "SECRET PROMPT" not in err.message
    assert "UnicodeEncodeError" in err.message and "surrogates not allowed" in err.message
    assert len(err.message) < 300
    long = ValueError("x" * 10_000)
    err = _errors.from_sdk("p", anthropic, long, transport_error=OSError, key_hint="k")
    assert len(err.message) < 600


# ---- Content-Type ----------------------------------------------------------------------------


async def test_json_routes_require_application_json(
    agent: RunningDaemon, project_dir: Path
) -> None:
    async with agent.unix() as c:
        sid = await new_session(c, project_dir)
        bodies = {
            "/sessions": "{}",
            "/projects": json.dumps({"name": "p", "path": str(project_dir)}),
            "/sessions/prune": '{"older_than_days": 1000}',
            f"/sessions/{sid}/messages": '{"parts": [{"type": "text", "text": "hi"}]}',
            f"/sessions/{sid}/permissions/perm_x": '{"response": "once"}',
        }
        for path, body in bodies.items():
            for ctype in (
                None,
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
            ):
                headers = {"Content-Type": ctype} if ctype else {}
                r = await c.post(path, content=body, headers=headers)
                assert_invalid(r, status=415)
                assert "application/json" in r.json()["error"]["message"]
        assert (await c.get(f"/sessions/{sid}/messages")).json() == []
        assert len((await c.get("/sessions")).json()) == 1
        # Parameters and case are fine; an empty body still creates a session.
        for ctype in ("application/json; charset=utf-8", "Application/JSON"):
            r = await c.post("/sessions", content="{}", headers={"Content-Type": ctype})
            assert r.status_code == 201, r.text
        assert (await c.post("/sessions")).status_code == 201


# ---- integers, tool names, models ------------------------------------------------------------


async def test_integers_are_plain_ascii_digits(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        sid = (await c.post("/sessions", json={})).json()["id"]
        for bad in (" 5", "5 ", "+5", "\u0665", "1_0", "0x5", "5.0", "", "-1"):
            assert_invalid(await c.get("/sessions", params={"limit": bad}), "limit")
            r = await c.get(f"/sessions/{sid}/events", params={"after": bad})
            assert_invalid(r, "after")
            if bad.strip() == bad and bad.isascii() and bad:  # what h11 can send
                r = await c.get(f"/sessions/{sid}/events", headers={"Last-Event-ID": bad})
                assert_invalid(r, "Last-Event-ID")
        assert (await c.get("/sessions", params={"limit": "5"})).status_code == 200


async def test_permission_map_refuses_unknown_tools(daemon: RunningDaemon) -> None:
    from opencoded.tools import TOOLS

    async with daemon.unix() as c:
        r = await c.post("/sessions", json={"permission": {"rm_rf": "allow"}})
        assert_invalid(r, "permission.rm_rf")
        assert "rm_rf" in r.json()["error"]["message"]
        r = await c.post("/sessions", json={"permission": dict.fromkeys(TOOLS, "allow")})
        assert r.status_code == 201, r.text


async def test_model_with_an_empty_half_is_refused(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        for model in ("anthropic/", "/claude", "/", " ", "anthropic/ "):
            assert_invalid(await c.post("/sessions", json={"model": model}), "model")
        assert_invalid(await c.post("/sessions", json={"provider": ""}), "provider")
        assert (await c.get("/sessions")).json() == []


# ---- Origin and Host -------------------------------------------------------------------------


def test_origins_and_hosts_are_compared_as_urls() -> None:
    from opencoded.config import load_config

    config = load_config(
        Path("/nonexistent.json"),
        env={},
        overrides={"server": {"cors": {"origin": ["https://app.example:8443"]}}},
    )
    policy = Policy.from_config(config, "t", cors_flag=True)
    for good in (
        "http://[::1]:5173",
        "http://localhost:5173",
        "http://127.0.0.1:8080",
        "http://LOCALHOST:5173",
        "https://app.example:8443",
    ):
        assert policy.origin_allowed(good), good
    for bad in (
        "http://localhost:1.evil.com",
        "http://localhost:5173.evil.com",
        "http://localhost.evil.com:80",
        "http://localhost:5173/path",
        "http://user@localhost:5173",
        "https://localhost:5173",
        "http://127.0.0.1:99999",
        "http://[::2]:5173",
        "https://app.example",
        "https://app.example:8443.evil",
        "null",
        "",
    ):
        assert not policy.origin_allowed(bad), bad
    plain = Policy.from_config(load_config(Path("/nonexistent.json"), env={}), "t")
    for good in ("localhost:3100", "127.0.0.1", "[::1]:3000", "LOCALHOST", "127.0.0.2:80"):
        assert plain.host_allowed(good), good
    for bad in (
        "localhost:3100@evil.com",
        "evil.com#@localhost",
        "localhost:abc",
        "localhost:3100/x",
        "localhost.evil.com",
        "[::1]evil:80",
        "user@localhost",
        "",
    ):
        assert not plain.host_allowed(bad), bad


async def test_ipv6_origin_and_hostile_host_over_http(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    origins = ["http://[::1]:5173", "http://localhost:*"]
    running = await start_daemon(nursery, tmpdir_short, {"server": {"cors": {"origin": origins}}})
    async with running.tcp() as c:
        r = await c.get("/sessions", headers={"Origin": "http://[::1]:5173"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://[::1]:5173"
        for origin in ("http://localhost:1.evil.com", "http://[::1]:5174"):
            assert (await c.get("/sessions", headers={"Origin": origin})).status_code == 403
        r = await c.get("/sessions", headers={"Host": "localhost:3100@evil.com"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "PERMISSION_DENIED"
    await running.shutdown()


# ---- 405 -------------------------------------------------------------------------------------


async def test_405_names_the_allowed_methods(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        sid = (await c.post("/sessions", json={})).json()["id"]
        cases = {
            "/sessions": ("PUT", {"GET", "POST"}),
            f"/sessions/{sid}": ("POST", {"GET", "DELETE"}),
            f"/sessions/{sid}/abort": ("GET", {"POST"}),
            "/health": ("DELETE", {"GET"}),
            f"/sessions/{sid}/messages": ("PUT", {"GET", "POST"}),
        }
        for path, (method, allowed) in cases.items():
            r = await c.request(method, path)
            assert r.status_code == 405, (path, r.text)
            assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
            got = {m.strip() for m in r.headers["allow"].split(",")}
            assert allowed <= got and method not in got, (path, got)


async def test_websocket_upgrade_refused_for_unknown_session(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        with pytest.raises(WebSocketUpgradeError):
            async with aconnect_ws("http://localhost/sessions/nope/stream", c):
                pass

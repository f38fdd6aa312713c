"""Contract section 2: token, Origin, Host, CORS, --no-auth, rate limit, socket trust."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from opencoded.config import ConfigError, load_config
from opencoded.server import check_config

from .conftest import RunningDaemon, start_daemon


async def test_tcp_needs_the_token(daemon: RunningDaemon) -> None:
    async with daemon.tcp(token=False) as c:
        r = await c.get("/sessions")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "UNAUTHORIZED"
        r = await c.get("/sessions", headers={"Authorization": "Bearer sk-opencode-wrong"})
        assert r.status_code == 401
        r = await c.get("/sessions", headers={"Authorization": f"Basic {daemon.token}"})
        assert r.status_code == 401
        assert (await c.get("/health")).status_code == 200  # health needs no token
    async with daemon.tcp() as c:
        assert (await c.get("/sessions")).status_code == 200


async def test_unix_socket_is_trusted(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        assert (await c.get("/sessions")).status_code == 200
        # A browser cannot reach the socket, so Origin and Host do not apply there.
        r = await c.get("/sessions", headers={"Origin": "http://evil.example", "Host": "x.example"})
        assert r.status_code == 200


async def test_foreign_origin_is_refused(daemon: RunningDaemon) -> None:
    async with daemon.tcp() as c:
        r = await c.get("/sessions", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "PERMISSION_DENIED"
        r = await c.post("/sessions", json={}, headers={"Origin": "http://localhost:5173"})
        assert r.status_code == 403  # no --cors: no browser origin at all


async def test_dns_rebinding_host_is_refused(daemon: RunningDaemon) -> None:
    async with daemon.tcp() as c:
        r = await c.get("/sessions", headers={"Host": "attacker.example:3000"})
        assert r.status_code == 403
        for host in ("localhost:1234", "127.0.0.1", "[::1]:80"):
            assert (await c.get("/sessions", headers={"Host": host})).status_code == 200


async def test_cors_flag_allows_localhost_origins(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(
        nursery,
        tmpdir_short,
        {"server": {"cors": {"origin": ["https://app.example"], "credentials": True}}},
    )
    async with running.tcp() as c:
        r = await c.get("/sessions", headers={"Origin": "https://app.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["access-control-allow-credentials"] == "true"
        r = await c.options(
            "/sessions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 204
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "Authorization" in r.headers["access-control-allow-headers"]
        r = await c.options("/sessions", headers={"Origin": "http://localhost:5173"})
        assert r.status_code == 403
    await running.shutdown()


def test_cors_flag_patterns() -> None:
    from opencoded.http.security import Policy

    config = load_config(Path("/nonexistent.json"), env={})
    policy = Policy.from_config(config, "t", cors_flag=True)
    assert policy.origin_allowed("http://localhost:5173")
    assert policy.origin_allowed("http://127.0.0.1:8080")
    assert not policy.origin_allowed("http://localhost.evil.example:80")
    assert not policy.origin_allowed("https://example.com")


async def test_no_auth_on_loopback(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    running = await start_daemon(nursery, tmpdir_short, server={"auth": False})
    async with running.tcp(token=False) as c:
        assert (await c.get("/sessions")).status_code == 200
        r = await c.get("/sessions", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403  # Origin is still checked
    await running.shutdown()


def test_no_auth_refused_off_loopback() -> None:
    config = load_config(
        Path("/nonexistent.json"), env={}, overrides={"server": {"host": "0.0.0.0", "auth": False}}
    )
    with pytest.raises(ConfigError, match="no-auth"):
        check_config(config)


async def test_rate_limit_per_token(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    running = await start_daemon(
        nursery, tmpdir_short, {"server": {"rateLimit": {"rate": 1, "burst": 5}}}
    )
    async with running.tcp() as c:
        statuses = [(await c.get("/sessions")).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5
        assert statuses[5:] == [429] * 3
        r = await c.get("/sessions")
        assert r.json()["error"]["code"] == "RATE_LIMITED"
        assert int(r.headers["retry-after"]) >= 1
    async with running.unix() as c:  # the socket is not limited
        assert all([(await c.get("/sessions")).status_code == 200 for _ in range(10)])
    await running.shutdown()


async def test_non_loopback_bind_accepts_any_host_with_token(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short, server={"host": "0.0.0.0"})
    url = running.tcp_url.replace("0.0.0.0", "127.0.0.1")
    async with running.tcp(base_url=url) as c:
        r = await c.get("/sessions", headers={"Host": "devbox.lan:3000"})
        assert r.status_code == 200
    async with running.tcp(base_url=url, token=False) as c:
        assert (await c.get("/sessions", headers={"Host": "devbox.lan"})).status_code == 401
    await running.shutdown()


async def test_query_token_only_for_browser_streams(daemon: RunningDaemon) -> None:
    async with daemon.tcp(token=False) as c:
        r = await c.get("/sessions", params={"token": daemon.token})
        assert r.status_code == 401  # plain routes take the header only
        sid_r = await c.post(
            "/sessions", json={}, headers={"Authorization": f"Bearer {daemon.token}"}
        )
        sid = sid_r.json()["id"]
        async with c.stream(
            "GET", f"/sessions/{sid}/events", params={"token": daemon.token, "after": 0}
        ) as r:
            assert r.status_code == 200  # EventSource cannot set headers

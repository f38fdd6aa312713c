"""Shared fixtures: the real daemon in the test's nursery, real HTTP over TCP and the socket."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from opencoded.config import load_config
from opencoded.daemon import Daemon
from opencoded.server import run_daemon
from opencoded.storage import SQLiteStore, Store
from opencoded.storage.postgres import PostgresStore

from . import pg_support

# The database of the running test when it runs on PostgreSQL (see `store_kind`), else
# None: start_daemon then gives every daemon it starts this database.
DATABASE: str | None = None


@attrs.define
class RunningDaemon:
    daemon: Daemon
    stop: trio.Event
    finished: trio.Event
    tmp: Path
    socket: Path
    data_dir: Path
    tcp_url: str
    token: str
    holds: AsyncExitStack = attrs.Factory(AsyncExitStack)  # runtimes a test holds open

    async def shutdown(self) -> None:
        await self.holds.aclose()
        self.stop.set()
        with trio.fail_after(10):
            await self.finished.wait()

    def tcp(self, *, token: bool = True, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        kwargs.setdefault("base_url", self.tcp_url)
        return httpx.AsyncClient(headers=headers, trust_env=False, timeout=10, **kwargs)

    def unix(self, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(
            base_url="http://localhost", transport=transport, timeout=10, **kwargs
        )


def short_tmp() -> Path:
    """A short temp dir: AF_UNIX socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="ocd", dir="/tmp"))


async def start_daemon(
    nursery: trio.Nursery, tmp: Path, config: dict[str, Any] | None = None, **flags: Any
) -> RunningDaemon:
    config_file = tmp / "opencode.json"
    config = dict(config or {})
    if DATABASE is not None:
        config.setdefault("database", DATABASE)
    config_file.write_text(json.dumps(config))
    server = {"host": "127.0.0.1", "port": 0, "socket": str(tmp / "d.sock")}
    server.update(flags.pop("server", {}))
    overrides = {"server": server, "dataDir": str(tmp / "data"), **flags}
    cfg = load_config(config_file, env={}, overrides=overrides)
    stop, finished = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[Daemon]) -> None:
        try:
            await run_daemon(cfg, stop=stop, task_status=task_status)
        finally:
            finished.set()

    daemon = await nursery.start(run)
    return RunningDaemon(
        daemon=daemon,
        stop=stop,
        finished=finished,
        tmp=tmp,
        socket=tmp / "d.sock",
        data_dir=tmp / "data",
        tcp_url=daemon.endpoints.tcp or "",
        token=daemon.token,
    )


@pytest.fixture
def tmpdir_short() -> AsyncIterator[Path]:
    tmp = short_tmp()
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def daemon(nursery: trio.Nursery, tmpdir_short: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, tmpdir_short)
    yield running
    await running.shutdown()


@pytest.fixture
async def project_dir(tmpdir_short: Path) -> Path:
    root = tmpdir_short / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hello')\n")
    (root / "README.md").write_text("# demo\n")
    return root


# ---- both stores: `pytestmark = pytest.mark.both_stores` runs a module's tests twice ----


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_stores: run on SQLite and on a real PostgreSQL (see conftest)"
    )
    config.addinivalue_line(
        "markers", "sqlite_only(reason): in a both_stores module, a test of SQLite itself"
    )


def query_test_db(data_dir: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one read on the database of this test's daemons (`?` placeholders)."""
    if DATABASE is not None:
        import psycopg

        with psycopg.connect(DATABASE) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()
    import sqlite3

    conn = sqlite3.connect(data_dir / "opencode.db", timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def open_test_store(data_dir: Path) -> AbstractAsyncContextManager[Store]:
    """The store the daemons of this test use (to build a state before one starts)."""
    if DATABASE is not None:
        return PostgresStore(DATABASE)
    return SQLiteStore(data_dir / "opencode.db")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if definition.get_closest_marker("sqlite_only"):
        return
    if definition.get_closest_marker("both_stores"):
        metafunc.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> AsyncIterator[pg_support.PgServer]:
    """A throwaway PostgreSQL for the whole run (skipped without it, failed under CI)."""
    try:
        server = pg_support.start_server()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_database(pg_server: pg_support.PgServer) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test; its URL."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(autouse=True)
def store_kind(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The store: "sqlite" (the default), or "postgres" in the both_stores runs; then
    every daemon that start_daemon starts in this test uses one fresh PostgreSQL database."""
    global DATABASE
    kind = getattr(request, "param", "sqlite")
    if kind == "postgres":
        DATABASE = request.getfixturevalue("pg_database")
    try:
        yield kind
    finally:
        DATABASE = None

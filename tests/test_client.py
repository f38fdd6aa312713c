"""The Python client (sync on both transports, and async under Trio) against a real daemon."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from opencode_cli import (
    APIError,
    AsyncClient,
    Client,
    ConnectError,
    Event,
    InvalidRequestError,
    NotFoundError,
    SessionNotFoundError,
    UnauthorizedError,
)
from opencode_cli._endpoint import resolve
from opencode_cli._exceptions import error_from_response
from opencode_cli._wire import SSEParser, parse_ndjson
from tests.cli_support import (
    DaemonProcess,
    FakeLLMProcess,
    rmtree,
    short_tmp,
    start_daemon,
    start_fake_llm,
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMProcess]:
    llm = start_fake_llm()
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def daemon(fake: FakeLLMProcess) -> Iterator[DaemonProcess]:
    d = start_daemon(fake.url)
    yield d
    d.stop()
    rmtree(d.tmp)


@pytest.fixture(params=["httpx", "stdlib"])
def client(request: pytest.FixtureRequest, daemon: DaemonProcess) -> Iterator[Client]:
    with Client(daemon.unix_url, backend=request.param) as c:
        yield c


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tmp("ocw")
    (path / "pkg").mkdir()
    (path / "pkg" / "mod.py").write_text("x = 1\n")
    yield path.resolve()
    rmtree(path)


# ---- endpoint resolution and wire parsing (pure) -----------------------------------------------


def test_endpoint_resolution_follows_the_contract(tmp_path: Path) -> None:
    env = {"OPENCODE_DATA_DIR": str(tmp_path)}
    (tmp_path / "token").write_text("sk-opencode-file\n")
    tcp = resolve("http://localhost:8080/", env=env)
    assert (tcp.base_url, tcp.uds, tcp.token, tcp.default) == (
        "http://localhost:8080",
        None,
        "sk-opencode-file",
        False,
    )
    assert resolve(env={**env, "OPENCODE_URL": "https://h:1", "OPENCODE_TOKEN": "t"}).token == "t"
    unix = resolve("unix:///tmp/x.sock", env=env)
    assert (unix.uds, unix.token) == ("/tmp/x.sock", None)  # no token over the socket
    default = resolve(env={"XDG_RUNTIME_DIR": "/run/user/7"})
    assert default.uds == "/run/user/7/opencode/opencoded.sock"
    assert default.default
    assert resolve(env={"OPENCODE_SOCKET": "/s"}).uds == "/s"
    with pytest.raises(Exception, match="unsupported"):
        resolve("ftp://x")


def test_error_documents_map_to_typed_exceptions() -> None:
    body = b'{"error": {"code": "SESSION_BUSY", "message": "busy", "details": {"id": "s"}}}'
    exc = error_from_response(409, body)
    assert type(exc).__name__ == "SessionBusyError"
    assert (exc.code, exc.status, exc.message, exc.details) == (
        "SESSION_BUSY",
        409,
        "busy",
        {"id": "s"},
    )
    limited = error_from_response(
        429, b'{"error": {"code": "RATE_LIMITED", "message": "m"}}', {"Retry-After": "3"}
    )
    assert limited.retry_after == 3.0  # type: ignore[attr-defined]
    unknown = error_from_response(418, b'{"error": {"code": "TEAPOT", "message": "m"}}')
    assert isinstance(unknown, APIError)
    assert unknown.code == "TEAPOT"
    html = error_from_response(404, b"<html>nope</html>")
    assert isinstance(html, NotFoundError)


def test_sse_parser_handles_ids_comments_and_multiline_data() -> None:
    parser = SSEParser()
    lines = [
        ": heartbeat",
        "id: 7",
        "event: tool-call",
        'data: {"id": "t1",',
        'data: "tool": "read"}',
        "",
    ]
    events = [e for e in (parser.feed(line) for line in lines) if e is not None]
    assert events == [Event("tool-call", 7, {"id": "t1", "tool": "read"})]
    assert parse_ndjson("") is None
    line = '{"type": "text-delta", "seq": 3, "data": {"text": "hi"}}'
    parsed = parse_ndjson(line)
    assert parsed is not None
    assert (parsed.type, parsed.seq, parsed.data, parsed.raw) == (
        "text-delta",
        3,
        {"text": "hi"},
        line,
    )


# ---- resources over the socket, both transports ------------------------------------------------


def test_health(client: Client, daemon: DaemonProcess) -> None:
    health = client.health()
    assert health.status == "ok"
    assert health.endpoints["unix"] == str(daemon.socket)
    assert health.version


def test_session_crud_and_pagination(client: Client, workdir: Path) -> None:
    made = [client.sessions.create(directory=str(workdir), title=f"s{i}") for i in range(5)]
    assert made[0].directory == str(workdir)
    assert made[0].status == "idle"
    assert client.sessions.get(made[2].id) == made[2]
    page1 = client.sessions.list(limit=2)
    page2 = client.sessions.list(limit=2, before=page1[-1].id)
    newest = [s.id for s in reversed(made)]
    assert [s.id for s in page1 + page2] == newest[:4]
    mine = [s.id for s in client.sessions.iter(page_size=2) if s.directory == str(workdir)]
    assert mine == newest
    by_project = client.sessions.list(project=made[0].project)
    assert {s.id for s in by_project} >= set(newest)
    client.sessions.delete(made[0].id)
    with pytest.raises(SessionNotFoundError) as info:
        client.sessions.get(made[0].id)
    assert (info.value.code, info.value.status) == ("SESSION_NOT_FOUND", 404)
    assert info.value.message


def test_invalid_request_is_typed(client: Client) -> None:
    with pytest.raises(InvalidRequestError) as info:
        client.sessions.list(limit=100000)
    assert info.value.status == 400
    assert info.value.details.get("field") == "limit"


def test_projects_and_files(client: Client, workdir: Path) -> None:
    project = client.projects.create("demo", str(workdir))
    assert (project.name, project.path) == ("demo", str(workdir))
    assert client.projects.get(project.id) == project
    assert project.id in {p.id for p in client.projects.list()}
    top = {e.name: e for e in client.files.list(project.id)}
    assert top["pkg"].type == "directory"
    inner = client.files.list(project.id, "pkg")
    assert [(e.name, e.type, e.size) for e in inner] == [("mod.py", "file", 6)]
    assert client.files.read(project.id, "pkg/mod.py") == "x = 1\n"
    with pytest.raises(APIError) as info:
        client.files.read(project.id, "../../etc/passwd")
    assert info.value.status in (400, 403, 404)  # an escape is an error, never a read
    client.projects.delete(project.id)
    with pytest.raises(NotFoundError):
        client.projects.get(project.id)


def test_catalog(client: Client) -> None:
    providers = client.providers()
    assert "anthropic" in {p.id for p in providers}
    models = client.models()
    assert any(m.provider == "anthropic" for m in models)


def test_tcp_needs_the_token(daemon: DaemonProcess) -> None:
    with Client(daemon.tcp_url, token=daemon.token) as c:
        assert c.sessions.list(limit=1) is not None
    for backend in ("httpx", "stdlib"):
        with Client(daemon.tcp_url, token="sk-opencode-wrong", backend=backend) as bad:  # type: ignore[arg-type]
            with pytest.raises(UnauthorizedError) as info:
                bad.sessions.list()
            assert info.value.status == 401
            assert bad.health().status == "ok"  # /health needs no token


# httpcore's sync Unix-socket connect leaves its socket to the GC when connect() fails
# (third party); the stdlib transport, ours, closes it (checked with warnings as errors).
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
def test_no_daemon_raises_connect_error() -> None:
    tmp = short_tmp()
    for backend in ("httpx", "stdlib"):
        c = Client(f"unix://{tmp}/none.sock", backend=backend)  # type: ignore[arg-type]
        with c, pytest.raises(ConnectError):
            c.health()
    rmtree(tmp)


# ---- turns (need the agent) ------------------------------------------------------------------


def test_message_streams_events(client: Client, fake: FakeLLMProcess, workdir: Path) -> None:
    fake.push(text=["Hi ", "there"])
    session = client.sessions.create(directory=str(workdir))
    events = list(client.sessions.message(session.id, text="Add tests"))
    assert events[-1].type == "complete"
    assert events[-1].data["status"] == "completed"
    assert "".join(e.data["text"] for e in events if e.type == "text-delta") == "Hi there"
    assert [e.seq for e in events] == sorted(e.seq for e in events)  # type: ignore[type-var]
    messages = client.sessions.messages(session.id)
    assert [(m.role, m.text) for m in messages] == [
        ("user", "Add tests"),
        ("assistant", "Hi there"),
    ]


def test_permission_list_and_respond(client: Client, fake: FakeLLMProcess, workdir: Path) -> None:
    call = {"id": "c1", "name": "write", "input": {"path": "out.txt", "content": "yes\n"}}
    fake.push(text=[], tool_calls=[call])
    fake.push(text=["done"])
    session = client.sessions.create(directory=str(workdir))
    seen = []
    for event in client.sessions.message(session.id, text="write it"):
        seen.append(event.type)
        if event.type == "permission":
            [pending] = client.permissions.list(session.id)
            assert (pending.id, pending.tool) == (event.data["id"], "write")
            client.permissions.respond(session.id, pending.id, "once")
            assert client.permissions.list(session.id) == []
    assert seen[-1] == "complete"
    assert (workdir / "out.txt").read_text() == "yes\n"
    with pytest.raises(NotFoundError):
        client.permissions.respond(session.id, "perm_unknown", "reject")


def test_submit_then_follow_events_and_resume_after_restart(
    fake: FakeLLMProcess, workdir: Path
) -> None:
    """The follower survives a daemon restart and picks up at the next seq, nothing repeated."""
    d = start_daemon(fake.url)
    try:
        with Client(d.unix_url, backend="stdlib") as c:
            session = c.sessions.create(directory=str(workdir))
            fake.push(text=["one"])
            accepted = c.sessions.submit(session.id, text="first")
            assert accepted.message_id
            got: list[Event] = []
            completes = threading.Semaphore(0)

            def follow() -> None:
                for event in c.sessions.events(session.id, 0, reconnect_timeout=20):
                    got.append(event)
                    if event.type == "complete":
                        completes.release()
                        if sum(e.type == "complete" for e in got) == 2:
                            return

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            assert completes.acquire(timeout=15)
            d.stop()
            d = start_daemon(fake.url, tmp=d.tmp)  # same socket and data dir
            fake.push(text=["two"])
            c.sessions.submit(session.id, text="second")
            assert completes.acquire(timeout=20)
            follower.join(5)
        seqs = [e.seq for e in got]
        assert seqs == sorted(set(seqs))  # strictly increasing: no repeats, resumed in order
        texts = "".join(e.data.get("text", "") for e in got if e.type == "text-delta")
        assert texts == "onetwo"
    finally:
        d.stop()


# ---- the async client under Trio ----------------------------------------------------------------


async def test_async_client_resources(daemon: DaemonProcess, workdir: Path) -> None:
    async with AsyncClient(daemon.unix_url) as c:
        assert (await c.health()).status == "ok"
        session = await c.sessions.create(directory=str(workdir), title="async")
        assert (await c.sessions.get(session.id)).title == "async"
        assert session.id in [s.id async for s in c.sessions.iter(page_size=3)]
        project = await c.projects.create("a", str(workdir))
        assert [e.name for e in await c.files.list(project.id, "pkg")] == ["mod.py"]
        assert await c.files.read(project.id, "pkg/mod.py") == "x = 1\n"
        await c.sessions.delete(session.id)
        with pytest.raises(SessionNotFoundError):
            await c.sessions.get(session.id)
    async with AsyncClient(daemon.tcp_url, token="wrong") as bad:
        with pytest.raises(UnauthorizedError):
            await bad.projects.list()


async def test_async_message_stream(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    await trio.to_thread.run_sync(lambda: fake.push(text=["as", "ync"]))
    async with AsyncClient(daemon.unix_url) as c:
        session = await c.sessions.create(directory=str(workdir))
        events = [e async for e in c.sessions.message(session.id, text="hello")]
        assert events[-1].data["status"] == "completed"
        assert "".join(e.data["text"] for e in events if e.type == "text-delta") == "async"
        replay = []
        async for e in c.sessions.events(session.id, 0, until_complete=True):
            replay.append(e)
        assert [e.seq for e in replay] == [e.seq for e in events if e.seq is not None][
            -len(replay) :
        ]

"""The installed ``opencode`` command, run as a subprocess against a real daemon (subprocess too).

Turn tests drive the real agent against the fake LLM (``python -m tests.fakes.llm``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencode_cli import Client
from tests.cli_support import (
    OPENCODE,
    DaemonProcess,
    FakeLLMProcess,
    StderrWatch,
    clean_env,
    rmtree,
    run_cli,
    short_tmp,
    start_daemon,
    start_fake_llm,
    stop_process,
)

FORBIDDEN = ("trio", "quart", "opencoded", "anthropic", "openai", "httpx", "hypercorn")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMProcess]:
    llm = start_fake_llm()
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def daemon(fake: FakeLLMProcess) -> Iterator[DaemonProcess]:
    d = start_daemon(fake.url)
    yield d
    assert d.stop() == 0
    rmtree(d.tmp)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tmp("ocw")
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("print('hi')\n")
    (path / "README.md").write_text("# demo\n")
    yield path.resolve()
    rmtree(path)


def client(d: DaemonProcess) -> Client:
    return Client(d.unix_url)


# ---- start-up and structure -------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    res = run_cli("--help", env=clean_env())
    assert res.returncode == 0
    for command in ("send", "serve", "status", "sessions", "messages", "providers", "models"):
        assert command in res.stdout
    for command in ("projects", "files", "token", "tui"):
        assert command in res.stdout


def test_unknown_command_is_a_usage_error() -> None:
    res = run_cli("frobnicate", env=clean_env())
    assert res.returncode == 2


def _modules_after(args: list[str], env: dict[str, str], cwd: Path | None = None) -> set[str]:
    """Run the CLI's main() in a fresh interpreter and report which top-level modules loaded."""
    script = (
        "import sys, json\n"
        "from opencode_cli.cli import main\n"
        f"sys.argv = ['opencode', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "top = sorted({m.split('.')[0] for m in sys.modules})\n"
        "sys.stdout.write('\\nMODULES ' + json.dumps([code, top]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd, timeout=30
    )
    line = res.stdout.rsplit("MODULES ", 1)[-1]
    code, modules = json.loads(line)
    assert code in (0, None), res.stderr
    return set(modules)


def test_status_imports_no_daemon_or_async_stack(daemon: DaemonProcess) -> None:
    loaded = _modules_after(["status", "--json"], daemon.env())
    assert "opencode_cli" in loaded
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)


# ---- status, token, errors ---------------------------------------------------------------------


def test_status_over_default_socket(daemon: DaemonProcess) -> None:
    res = run_cli("status", env=daemon.env())
    assert res.returncode == 0, res.stderr
    assert "opencoded" in res.stdout
    assert str(daemon.socket) in res.stdout
    assert "sessions running:" in res.stdout
    as_json = json.loads(run_cli("status", "--json", env=daemon.env()).stdout)
    assert as_json["status"] == "ok"
    assert as_json["endpoints"]["unix"] == str(daemon.socket)


def test_status_over_tcp_uses_the_data_dir_token(daemon: DaemonProcess) -> None:
    res = run_cli("status", "--json", "--url", daemon.tcp_url, env=daemon.env())
    assert res.returncode == 0, res.stderr
    listing = run_cli("sessions", "--json", "--url", daemon.tcp_url, env=daemon.env())
    assert listing.returncode == 0, listing.stderr
    bad = run_cli(
        "sessions", "--url", daemon.tcp_url, env=daemon.env(OPENCODE_TOKEN="sk-opencode-wrong")
    )
    assert bad.returncode == 1
    assert "UNAUTHORIZED" in bad.stderr


def test_token_prints_the_daemon_token(daemon: DaemonProcess) -> None:
    res = run_cli("token", env=daemon.env())
    assert res.returncode == 0
    assert res.stdout.strip() == daemon.token
    assert res.stdout.startswith("sk-opencode-")
    empty = short_tmp()
    missing = run_cli("token", "--data-dir", str(empty), env=daemon.env())
    assert missing.returncode == 1
    assert "no token" in missing.stderr
    rmtree(empty)


def test_no_daemon_is_a_clear_error_and_no_autostart_when_disabled() -> None:
    tmp = short_tmp()
    env = clean_env(OPENCODE_SOCKET=str(tmp / "none.sock"), OPENCODE_DATA_DIR=str(tmp / "data"))
    res = run_cli("sessions", env=env)
    assert res.returncode == 1
    assert "cannot reach opencoded" in res.stderr
    for extra, args in (
        ({}, ["status", "--no-start"]),
        ({"OPENCODE_NO_AUTOSTART": "1"}, ["status"]),
    ):
        res = run_cli(*args, env={**env, **extra})
        assert res.returncode == 1
        assert "started opencoded" not in res.stderr
    assert not (tmp / "none.sock").exists()
    rmtree(tmp)


def test_explicit_url_is_never_auto_started() -> None:
    tmp = short_tmp()
    env = clean_env(OPENCODE_SOCKET=str(tmp / "d.sock"), OPENCODE_DATA_DIR=str(tmp / "data"))
    res = run_cli("status", "--url", f"unix://{tmp}/other.sock", env=env)
    assert res.returncode == 1
    assert "started opencoded" not in res.stderr
    assert not (tmp / "d.sock").exists()
    rmtree(tmp)


def test_autostart_brings_up_a_daemon_and_the_second_call_reuses_it() -> None:
    tmp = short_tmp()
    cfg = tmp / "opencode.json"
    cfg.write_text("{}")
    env = clean_env(
        OPENCODE_SOCKET=str(tmp / "run" / "d.sock"),
        OPENCODE_DATA_DIR=str(tmp / "data"),
        OPENCODE_CONFIG=str(cfg),
        OPENCODE_PORT="0",
    )
    first = run_cli("status", env=env)
    pid_text = first.stderr.split("(pid ", 1)[-1].split(")", 1)[0]
    try:
        assert first.returncode == 0, first.stderr
        assert "started opencoded" in first.stderr
        assert (tmp / "data" / "opencoded.log").exists()
        second = run_cli("status", "--json", env=env)
        assert second.returncode == 0, second.stderr
        assert "started opencoded" not in second.stderr
        assert json.loads(second.stdout)["endpoints"]["unix"] == str(tmp / "run" / "d.sock")
    finally:
        if pid_text.isdigit():
            os.kill(int(pid_text), signal.SIGTERM)
            _wait_gone(tmp / "run" / "d.sock")
        rmtree(tmp)


def _wait_gone(path: Path, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


# ---- sessions, messages, projects, files, catalog ---------------------------------------------


def test_sessions_list_show_delete(daemon: DaemonProcess, workdir: Path) -> None:
    with client(daemon) as c:
        made = [c.sessions.create(directory=str(workdir), title=f"t{i}") for i in range(3)]
    listing = run_cli("sessions", "--json", env=daemon.env())
    assert listing.returncode == 0, listing.stderr
    ids = [s["id"] for s in json.loads(listing.stdout)]
    assert ids[:3] == [s.id for s in reversed(made)]  # newest first

    piped = run_cli("sessions", "list", "--limit", "2", env=daemon.env())
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert [r[0] for r in rows] == ids[:2]  # no header when piped, tab separated
    assert rows[0][4] == str(workdir)

    shown = run_cli("sessions", "show", made[0].id, env=daemon.env())
    assert shown.returncode == 0
    assert f"id: {made[0].id}" in shown.stdout
    assert "title: t0" in shown.stdout

    assert run_cli("sessions", "delete", made[0].id, env=daemon.env()).returncode == 0
    gone = run_cli("sessions", "show", made[0].id, env=daemon.env())
    assert gone.returncode == 1
    assert "SESSION_NOT_FOUND" in gone.stderr


def test_unknown_session_exits_1_with_the_api_message(daemon: DaemonProcess) -> None:
    with client(daemon) as c:
        try:
            c.sessions.get("ses_doesnotexist")
        except Exception as exc:
            api_message = exc.message  # type: ignore[attr-defined]
    for args in (["sessions", "show", "ses_doesnotexist"], ["messages", "ses_doesnotexist"]):
        res = run_cli(*args, env=daemon.env())
        assert res.returncode == 1
        assert api_message in res.stderr
        assert res.stdout == ""


def test_send_without_a_provider_leaves_no_empty_session(workdir: Path) -> None:
    d = start_daemon(config={"provider": {}, "model": None})
    try:
        res = run_cli("send", "--no-start", "hello", env=d.env(), cwd=workdir)
        assert res.returncode == 1
        assert "no model provider is configured" in res.stderr
        with client(d) as c:
            assert c.sessions.list() == []
    finally:
        d.stop()
        rmtree(d.tmp)


def test_projects_add_list_remove_and_files(daemon: DaemonProcess, workdir: Path) -> None:
    added = run_cli("projects", "add", "demo", str(workdir), env=daemon.env())
    assert added.returncode == 0, added.stderr
    pid = added.stdout.strip()
    listed = json.loads(run_cli("projects", "--json", env=daemon.env()).stdout)
    assert {"id": pid, "name": "demo", "path": str(workdir)}.items() <= next(
        p for p in listed if p["id"] == pid
    ).items()

    files = run_cli("files", "--json", env=daemon.env(), cwd=workdir)
    assert files.returncode == 0, files.stderr
    names = {e["name"]: e["type"] for e in json.loads(files.stdout)}
    assert names["src"] == "directory"
    assert names["README.md"] == "file"
    inner = run_cli("files", "src", env=daemon.env(), cwd=workdir)
    assert inner.stdout.split("\t")[0] == "app.py"
    from_sub = run_cli("files", env=daemon.env(), cwd=workdir / "src")
    assert from_sub.stdout.startswith("app.py\t")
    cat = run_cli("files", "--cat", "src/app.py", env=daemon.env(), cwd=workdir)
    assert cat.stdout == "print('hi')\n"
    by_id = run_cli("files", "--project", pid, "--json", env=daemon.env(), cwd="/")
    assert {e["name"] for e in json.loads(by_id.stdout)} == set(names)

    assert run_cli("projects", "remove", pid, env=daemon.env()).returncode == 0
    again = run_cli("projects", "remove", pid, env=daemon.env())
    assert again.returncode == 1
    assert "NOT_FOUND" in again.stderr
    nowhere = run_cli("files", env=daemon.env(), cwd=workdir)
    assert nowhere.returncode == 1
    assert "no project" in nowhere.stderr


def test_providers_and_models(daemon: DaemonProcess) -> None:
    providers = run_cli("providers", "--json", env=daemon.env())
    assert providers.returncode == 0, providers.stderr
    assert "anthropic" in {p["id"] for p in json.loads(providers.stdout)}
    models = run_cli("models", "--json", env=daemon.env())
    assert any(m["provider"] == "anthropic" for m in json.loads(models.stdout))
    text = run_cli("models", env=daemon.env())
    assert text.returncode == 0
    assert "anthropic/" in text.stdout


def test_serve_runs_the_daemon_in_the_foreground() -> None:
    tmp = short_tmp()
    proc = subprocess.Popen(
        [OPENCODE, "serve", "--port", "0", "--socket", f"{tmp}/s.sock", "--data-dir", f"{tmp}/d"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(OPENCODE_CONFIG=str(tmp / "none.json")),
    )

    watch = StderrWatch(proc)
    try:
        watch.wait_for("opencoded ready:")
        with Client(f"unix://{tmp}/s.sock", backend="stdlib") as c:
            assert c.health().status == "ok"
    finally:
        assert stop_process(proc) == 0
        rmtree(tmp)
    helped = run_cli("serve", "--help", env=clean_env())
    assert "--socket" in helped.stdout
    assert "--no-auth" in helped.stdout


def test_usage_errors_exit_2(daemon: DaemonProcess, workdir: Path) -> None:
    bad_model = run_cli("send", "--model", "nonsense", "hi", env=daemon.env(), cwd=workdir)
    assert bad_model.returncode == 2
    assert "PROVIDER/MODEL" in bad_model.stderr
    empty = run_cli("send", env=daemon.env(), cwd=workdir, input="")
    assert empty.returncode == 2
    both = run_cli("send", "-s", "x", "-c", "hi", env=daemon.env(), cwd=workdir)
    assert both.returncode == 2


# ---- turns (need the agent) ------------------------------------------------------------------


def _sessions_in(d: DaemonProcess, directory: Path) -> list[str]:
    with client(d) as c:
        return [s.id for s in c.sessions.iter() if s.directory == str(directory)]


def test_send_streams_the_reply_and_exits_0(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["Hel", "lo ", "there"])
    res = run_cli("send", "Say hello", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "Hello there\n"
    [sid] = _sessions_in(daemon, workdir)
    with client(daemon) as c:
        texts = [m.text for m in c.sessions.messages(sid)]
    assert texts == ["Say hello", "Hello there"]


def test_send_json_is_ndjson_line_by_line(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["a", "b"])
    res = run_cli("send", "--json", "go", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(set(e) >= {"type", "seq", "data"} for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert "".join(e["data"]["text"] for e in events if e["type"] == "text-delta") == "ab"
    assert events[-1]["type"] == "complete"
    assert events[-1]["data"]["status"] == "completed"


def test_send_reads_stdin_and_continue_reuses_the_session(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["one"])
    fake.push(text=["two"])
    fake.push(text=["three"])
    first = run_cli("send", env=daemon.env(), cwd=workdir, input="from a pipe\n")
    assert first.returncode == 0, first.stderr
    second = run_cli("send", "-c", "-", env=daemon.env(), cwd=workdir, input="dash too")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "two\n"
    [sid] = _sessions_in(daemon, workdir)
    third = run_cli("send", "--session", sid, "by id", env=daemon.env(), cwd="/")
    assert third.stdout == "three\n"
    with client(daemon) as c:
        users = [m.text for m in c.sessions.messages(sid) if m.role == "user"]
    assert users == ["from a pipe\n", "dash too", "by id"]


def test_send_model_flag_sets_the_new_session_model(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["ok"])
    res = run_cli("send", "-m", "anthropic/claude-test-9", "hi", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    [sid] = _sessions_in(daemon, workdir)
    with client(daemon) as c:
        s = c.sessions.get(sid)
    assert (s.provider, s.model) == ("anthropic", "claude-test-9")
    assert fake.requests()[-1]["body"]["model"] == "claude-test-9"


def _write_call(name: str) -> dict[str, object]:
    return {"id": "call_w", "name": "write", "input": {"path": name, "content": "made\n"}}


def test_permission_allowed_with_yes(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=[], tool_calls=[_write_call("new.txt")])
    fake.push(text=["written"])
    res = run_cli("send", "--yes", "make a file", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert (workdir / "new.txt").read_text() == "made\n"
    assert "write new.txt" in res.stderr  # the tool line
    assert res.stdout.endswith("written\n")


def test_permission_refused_when_stdin_is_not_a_terminal(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=[], tool_calls=[_write_call("nope.txt")])
    fake.push(text=["could not"])
    res = run_cli("send", "--json", "make a file", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert not (workdir / "nope.txt").exists()
    assert "refused" in res.stderr
    types = [json.loads(line)["type"] for line in res.stdout.splitlines()]
    assert "permission" in types
    result = next(
        json.loads(line)["data"]
        for line in res.stdout.splitlines()
        if json.loads(line)["type"] == "tool-result"
    )
    assert result["error"] is True


def test_ctrl_c_aborts_the_turn_on_the_daemon(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["first", "never"], hang=True)
    proc = subprocess.Popen(
        [OPENCODE, "send", "--json", "wait for it"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon.env(),
        cwd=workdir,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the turn is running once this arrives
        assert first["type"] in ("text-delta", "message")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        stop_process(proc)
    assert proc.returncode == 130, err
    [sid] = _sessions_in(daemon, workdir)
    with client(daemon) as c:
        assert c.sessions.get(sid).status == "idle"
        complete = next(e for e in c.sessions.events(sid, 0, until_complete=True) if e.is_complete)
    assert complete.data["status"] == "aborted"


def test_send_to_unknown_session_exits_1_with_api_message(daemon: DaemonProcess) -> None:
    res = run_cli("send", "--session", "ses_missing", "hello", env=daemon.env())
    assert res.returncode == 1
    assert "SESSION_NOT_FOUND" in res.stderr


def test_send_imports_no_daemon_or_async_stack(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["fine"])
    loaded = _modules_after(["send", "--json", "hello"], daemon.env(), cwd=workdir)
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)


def test_messages_shows_the_conversation(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["the answer"])
    assert run_cli("send", "question", env=daemon.env(), cwd=workdir).returncode == 0
    [sid] = _sessions_in(daemon, workdir)
    res = run_cli("messages", sid, env=daemon.env())
    assert res.stdout.splitlines() == ["user:", "question", "", "assistant:", "the answer"]
    as_json = json.loads(run_cli("messages", sid, "--json", env=daemon.env()).stdout)
    assert [m["role"] for m in as_json] == ["user", "assistant"]


def test_cli_has_its_own_python(daemon: DaemonProcess) -> None:
    # The console script must run the venv's interpreter (auto-start and serve reuse it).
    first_line = Path(OPENCODE).read_text().splitlines()[0]
    assert first_line.startswith("#!")
    assert Path(first_line[2:].strip()).name.startswith("python")

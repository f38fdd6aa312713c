"""Issue 14's frictions, one test each: the installed ``opencode`` run as a subprocess (or in a
pseudo-terminal where a person would be) against a real daemon and the fake LLM."""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from opencode_cli import Client
from tests.cli_support import (
    DaemonProcess,
    FakeLLMProcess,
    clean_env,
    cli_fixtures,
    rmtree,
    run_cli,
    short_tmp,
    spawn_cli,
    start_daemon,
    wait_for,
    write_config,
)

fake, daemon, workdir = cli_fixtures("ocf")


def _write_call(name: str, call_id: str = "call_w") -> dict[str, object]:
    return {"id": call_id, "name": "write", "input": {"path": name, "content": "made\n"}}


# ---- 1 and 2: a keyless autostarted daemon, `daemon restart`, and a busy TCP port ------------


@contextlib.contextmanager
def port_3000_taken() -> Iterator[None]:
    """Something listens on 127.0.0.1:3000 for the block (us, or whoever already does)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(("127.0.0.1", 3000))
            sock.listen(1)
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE  # taken already: just as good
        yield
    finally:
        sock.close()


def test_restart_picks_up_a_new_key_and_autostart_ignores_a_busy_port(
    fake: FakeLLMProcess, workdir: Path
) -> None:
    tmp = short_tmp()
    (tmp / "opencode.json").write_text("{}")
    env = clean_env(
        OPENCODE_SOCKET=str(tmp / "d.sock"),
        OPENCODE_DATA_DIR=str(tmp / "data"),
        OPENCODE_CONFIG=str(tmp / "opencode.json"),
        XDG_CONFIG_HOME=str(tmp / "xdg"),  # no systemd units here
    )
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        env.pop(key, None)
    try:
        with port_3000_taken():
            first = run_cli("send", "hello", env=env, cwd=workdir)
            assert "started opencoded" in first.stderr  # the busy port did not stop it
            assert "cannot listen" not in first.stderr
            assert first.returncode == 1
            assert "no model provider is configured" in first.stderr
            assert "opencode daemon restart" in first.stderr
            health = json.loads(run_cli("status", "--json", env=env).stdout)
            assert health["endpoints"]["unix"] == str(tmp / "d.sock")
            assert not health["endpoints"].get("tcp")

            keyed = {**env, "ANTHROPIC_API_KEY": "test", "ANTHROPIC_BASE_URL": fake.url}
            still = run_cli("send", "hello", env=keyed, cwd=workdir)
            assert still.returncode == 1  # the running daemon has the old environment

            restarted = run_cli("daemon", "restart", env=keyed)
            assert restarted.returncode == 0, restarted.stderr
            assert "stopped opencoded" in restarted.stdout
            assert "started opencoded" in restarted.stderr
            fake.push(text=["keyed", " reply"])
            ok = run_cli("send", "hello", env=keyed, cwd=workdir)
            assert ok.returncode == 0, ok.stderr
            assert ok.stdout == "keyed reply\n"
    finally:
        run_cli("daemon", "stop", env=env)
        rmtree(tmp)


# ---- 3: prune with unmistakable units, a confirmation, --yes and --dry-run -------------------


def test_prune_refuses_m_confirms_on_a_tty_and_has_dry_run(fake: FakeLLMProcess) -> None:
    d = start_daemon(fake.url)
    env = d.env()
    try:
        with Client(d.unix_url) as c:
            made = {c.sessions.create(directory=str(d.tmp / "work")).id for _ in range(2)}
        ambiguous = run_cli("sessions", "prune", "--older-than", "6m", env=env)
        assert ambiguous.returncode == 2
        assert "6min" in ambiguous.stderr
        assert "ambiguous" in ambiguous.stderr

        def listed() -> set[str]:
            res = run_cli(
                "sessions", "prune", "--older-than", "0min", "--dry-run", "--json", env=env
            )
            assert res.returncode == 0, res.stderr
            return {s["id"] for s in json.loads(res.stdout)}

        wait_for(lambda: listed() == made, what="the sessions to be older than now")
        scripted = run_cli("sessions", "prune", "--older-than", "0min", env=env)
        assert scripted.returncode == 2
        assert "--yes" in scripted.stderr
        assert listed() == made  # neither the dry run nor the refusal removed anything

        child = spawn_cli(["sessions", "prune", "--older-than", "0min"], env, d.tmp)
        child.expect_exact("Remove these 2 session(s), not updated for 0 minutes?")
        child.sendline("n")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 1
        assert listed() == made

        child = spawn_cli(["sessions", "prune", "--older-than", "0min"], env, d.tmp)
        child.expect_exact("[y/N]")
        child.sendline("y")
        child.expect_exact("removed 2 session(s)")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        with Client(d.unix_url) as c:
            assert c.sessions.list() == []

        helped = run_cli("sessions", "prune", "--help", env=env)
        assert "90min" in helped.stdout and "--dry-run" in helped.stdout
    finally:
        d.stop()
        rmtree(d.tmp)


# ---- 4: projects add PATH --------------------------------------------------------------------


def test_projects_add_takes_a_path(daemon: DaemonProcess, workdir: Path) -> None:
    target = workdir / "myapp"
    target.mkdir()
    added = run_cli("projects", "add", str(target), "--json", env=daemon.env(), cwd="/")
    assert added.returncode == 0, added.stderr
    project = json.loads(added.stdout)
    assert (project["name"], project["path"]) == ("myapp", str(target))

    (workdir / "rel").mkdir()
    relative = run_cli("projects", "add", "rel", env=daemon.env(), cwd=workdir)
    assert relative.returncode == 0, relative.stderr
    assert f"registered {workdir / 'rel'} as project 'rel'" in relative.stderr
    rel_id = relative.stdout.strip()
    with Client(daemon.unix_url) as c:
        assert c.projects.get(rel_id).path == str(workdir / "rel")

    missing = run_cli("projects", "add", "nonexistent", env=daemon.env(), cwd=workdir)
    assert missing.returncode == 2
    assert "not a directory: nonexistent" in missing.stderr

    again = run_cli("projects", "add", str(target), env=daemon.env(), cwd="/")
    assert again.stdout.strip() == project["id"]
    assert "already registered" in again.stderr


# ---- 5: pending permissions, seen and answered from another shell -----------------------------


def test_permissions_list_and_answer_from_another_shell(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=[], tool_calls=[_write_call("granted.txt")])
    fake.push(text=["done"])
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir)).id
        c.sessions.submit(sid, "write it")  # nobody follows the turn
        perm = wait_for(lambda: c.permissions.list(sid), what="the permission request")[0]

        listing = run_cli("permissions", env=daemon.env())
        assert listing.returncode == 0, listing.stderr
        assert f"{perm.id}\t{sid}\twrite\tgranted.txt" in listing.stdout
        one = json.loads(run_cli("permissions", sid, "--json", env=daemon.env()).stdout)
        assert [(p["id"], p["session"]) for p in one] == [(perm.id, sid)]

        piped = run_cli("send", "-c", "and then?", env=daemon.env(), cwd=workdir)
        assert piped.returncode == 1
        assert f"opencode permissions answer {perm.id} once|always|reject" in piped.stderr

        bad = run_cli("permissions", "answer", perm.id, "sure", env=daemon.env())
        assert bad.returncode == 2
        answered = run_cli("permissions", "answer", perm.id, "once", env=daemon.env())
        assert answered.returncode == 0, answered.stderr
        wait_for(lambda: c.sessions.get(sid).status == "idle", what="the turn to end")
    assert (workdir / "granted.txt").read_text() == "made\n"
    none = run_cli("permissions", env=daemon.env())
    assert "no pending permission requests" in none.stderr


def test_send_continue_asks_a_waiting_permission_on_a_terminal(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=[], tool_calls=[_write_call("later.txt")])
    fake.push(text=["first turn done"])
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir)).id
        c.sessions.submit(sid, "write it")
        wait_for(lambda: c.permissions.list(sid), what="the permission request")
    fake.push(text=["second reply"])
    child = spawn_cli(["send", "-c", "next"], daemon.env(NO_COLOR="1"), workdir)
    try:
        child.expect_exact(f"session {sid} is waiting for a permission answer")
        child.expect_exact("Allow? [y]es, [n]o, [a]lways")
        child.sendline("y")
        child.expect_exact("second reply")
        child.expect(pexpect.EOF)
        child.close()
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert (workdir / "later.txt").read_text() == "made\n"


# ---- 6: feedback while waiting: spinner, tool output, short errors ----------------------------


def test_spinner_on_a_terminal_until_the_model_answers(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    # The model starts a tool call and never finishes it: nothing reaches the client.
    fake.push(text=[], tool_calls=[_write_call("x.txt")], hang=True)
    child = spawn_cli(["send", "think hard"], daemon.env(), workdir)
    try:
        child.expect_exact("waiting for the model…")
        child.sendintr()
        child.expect_exact("aborted")
        child.expect(pexpect.EOF)
        child.close()
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    piped = run_cli("send", "--no-start", "hi", env=daemon.env(), cwd=workdir)
    assert "waiting for the model" not in piped.stderr  # no spinner off a terminal


def test_successful_tool_output_is_shown_trimmed_and_whole_with_verbose(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    command = "for i in $(seq 1 20); do echo line$i; done"
    call = {"id": "b1", "name": "bash", "input": {"command": command}}
    for flags in ([], ["--verbose"]):
        fake.push(text=[], tool_calls=[call])
        fake.push(text=["ran"])
        res = run_cli("send", "--yes", *flags, "count", env=daemon.env(), cwd=workdir)
        assert res.returncode == 0, res.stderr
        assert "│ line1\n" in res.stderr
        if flags:
            assert "│ line20" in res.stderr
            assert "more line(s)" not in res.stderr
        else:
            assert "│ line6\n" in res.stderr and "line7" not in res.stderr
            assert re.search(r"│ … \d+ more line\(s\) \(--verbose shows all\)", res.stderr)


class _HtmlErrorProvider(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the provider answering with its HTML error page."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        page = (
            "<!DOCTYPE html><html><head><title>403 Forbidden by proxy</title>"
            "<style>body{color:red}</style></head><body>"
            + "<p>blocked</p>" * 200
            + "</body></html>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


def test_provider_errors_are_short_and_name_the_url(workdir: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlErrorProvider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    html = start_daemon(f"http://127.0.0.1:{server.server_address[1]}")
    down = start_daemon(None)  # baseURL http://127.0.0.1:9: nothing listens
    try:
        res = run_cli("send", "hi", env=html.env(), cwd=workdir)
        assert res.returncode == 1
        assert "403 Forbidden by proxy" in res.stderr
        assert "<p>" not in res.stderr and "<html" not in res.stderr.lower()
        assert len(res.stderr) < 1000

        res = run_cli("send", "hi", env=down.env(), cwd=workdir, timeout=60)
        assert res.returncode == 1
        assert "unreachable at http://127.0.0.1:9" in res.stderr
        assert "; retry 1/" in down.stderr.text  # the daemon log says why it waited
    finally:
        server.shutdown()
        server.server_close()
        for d in (html, down):
            d.stop()
            rmtree(d.tmp)


RETRY_LINE = r"retrying in \d+\.\d s \(connection refused: http://127\.0\.0\.1:9\) — attempt {}/4"


def test_retries_are_shown_live_with_their_reason_and_url(workdir: Path) -> None:
    down = start_daemon(None)  # baseURL http://127.0.0.1:9: nothing listens
    try:
        child = spawn_cli(["send", "hi"], down.env(), workdir, timeout=30)
        try:  # on a terminal: the spinner's line, drawn at once for each retry
            for attempt in (2, 3, 4):
                child.expect(RETRY_LINE.format(attempt))
            child.expect_exact("unreachable at http://127.0.0.1:9")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 1

        piped = run_cli("send", "hi", env=down.env(), cwd=workdir, timeout=60)
        lines = [ln for ln in piped.stderr.splitlines() if ln.startswith("retrying in")]
        assert len(lines) == 3 and re.fullmatch(RETRY_LINE.format(2), lines[0])

        as_json = run_cli("send", "--json", "hi", env=down.env(), cwd=workdir, timeout=60)
        events = [json.loads(line) for line in as_json.stdout.splitlines()]
        retries = [e for e in events if e["type"] == "retry"]
        assert [e["data"]["attempt"] for e in retries] == [2, 3, 4]
        assert retries[0]["data"]["url"] == "http://127.0.0.1:9"
        assert retries[0]["data"]["reason"] == "connection refused"
        assert all(isinstance(e["seq"], int) for e in retries)
    finally:
        down.stop()
        rmtree(down.tmp)


# ---- 7: titles, and `messages` defaulting to this directory's session --------------------------


def test_sessions_get_a_title_and_messages_defaults_to_this_directory(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["sure"])
    res = run_cli("send", "Fix the login bug\nwith details below", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    with Client(daemon.unix_url) as c:
        [mine] = [s for s in c.sessions.list() if s.directory == str(workdir)]
    assert mine.title == "Fix the login bug"
    shown = run_cli("messages", env=daemon.env(), cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "Fix the login bug" in shown.stdout and "sure" in shown.stdout
    elsewhere = short_tmp("ocn")
    try:
        none = run_cli("messages", env=daemon.env(), cwd=elsewhere)
        assert none.returncode == 1
        assert "no session in this directory" in none.stderr
    finally:
        rmtree(elsewhere)


# ---- 8: headers on a terminal, providers say what is configured -----------------------------


def test_listings_have_headers_and_providers_show_configured(daemon: DaemonProcess) -> None:
    child = spawn_cli(["providers"], daemon.env(NO_COLOR="1"), "/")
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before.replace("\r\n", "\n")
    header, *rows = screen.strip().splitlines()
    assert header.split() == ["ID", "NAME", "CONFIGURED", "MODELS"]
    by_id = {row.split()[0]: row for row in rows}
    assert " yes " in by_id["anthropic"]
    assert " no " in by_id["openai"]
    child = spawn_cli(["sessions"], daemon.env(NO_COLOR="1"), "/")
    child.expect(pexpect.EOF)
    child.close()
    assert child.before.lstrip().startswith("ID ")
    piped = json.loads(run_cli("providers", "--json", env=daemon.env()).stdout)
    assert {p["id"]: p["configured"] for p in piped}["anthropic"] is True


# ---- 9: --version and completion -----------------------------------------------------------------


def test_version_and_shell_completion(workdir: Path) -> None:
    from opencode_cli import __version__

    env = clean_env(HOME=str(workdir), XDG_DATA_HOME=str(workdir / "share"), SHELL="/bin/bash")
    res = run_cli("--version", env=env)
    assert (res.returncode, res.stdout) == (0, f"opencode {__version__}\n")
    script = run_cli("completion", "bash", env=env)
    assert script.returncode == 0
    assert "_OPENCODE_COMPLETE=complete_bash" in script.stdout
    installed = run_cli("--install-completion", env=env)
    assert installed.returncode == 0, installed.stderr
    path = workdir / "share" / "bash-completion" / "completions" / "opencode"
    assert path.read_text() == script.stdout
    asked = run_cli(
        env={
            **env,
            "_OPENCODE_COMPLETE": "complete_bash",
            "COMP_WORDS": "opencode se",
            "COMP_CWORD": "1",
        },
    )
    assert asked.stdout.split() == ["send", "serve", "sessions"]
    zsh = run_cli("completion", "zsh", "--install", env=env)
    assert zsh.returncode == 0 and (workdir / ".zfunc" / "_opencode").is_file()


# ---- 10: hints and docs; unknown config keys -----------------------------------------------------


def test_unreachable_hint_names_daemon_start() -> None:
    tmp = short_tmp()
    env = clean_env(OPENCODE_SOCKET=str(tmp / "none.sock"), OPENCODE_DATA_DIR=str(tmp / "data"))
    res = run_cli("sessions", env=env)
    rmtree(tmp)
    assert res.returncode == 1
    assert "opencode daemon start" in res.stderr
    assert "opencode serve" not in res.stderr


def test_misspelled_config_key_is_warned_with_file_and_line(fake: FakeLLMProcess) -> None:
    tmp = short_tmp()
    cfg = tmp / "opencode.json"
    cfg.write_text(
        '{\n  "model": "anthropic/claude-sonnet-4-5",\n  "provider": {\n'
        '    "anthropic": {\n      "options": {\n        "apiKey": "test",\n'
        f'        "baseUrl": "{fake.url}"\n      }}\n    }}\n  }}\n}}\n'
    )
    d = start_daemon(tmp=tmp)
    try:
        warning = d.stderr.wait_for(f"config file {cfg}, line 7:")
        assert "unknown key 'provider.anthropic.options.baseUrl'" in warning
        assert "did you mean 'baseURL'?" in warning
    finally:
        d.stop()
        rmtree(tmp)


def test_readme_covers_activation_env_base_urls_and_the_cli_extras() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for needle in (
        "source .venv/bin/activate",
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
        "opencode daemon restart",
        "opencode permissions",
        "opencode completion",
    ):
        assert needle in readme, needle


# ---- 11: the daemon log at INFO has no line per provider request --------------------------------


def test_provider_requests_log_at_debug_only(fake: FakeLLMProcess, workdir: Path) -> None:
    daemons = {
        level: start_daemon(fake.url, args=["--log-level", level]) for level in ("info", "debug")
    }
    try:
        for level, d in daemons.items():
            fake.push(text=["logged"])
            res = run_cli("send", "hi", env=d.env(), cwd=workdir)
            assert res.returncode == 0, res.stderr
            if level == "debug":
                d.stderr.wait_for("httpx2 INFO: HTTP Request: POST")
        d = daemons["info"]
        d.stderr.wait_for("turn ")  # what an operator wants: one line per turn
        assert " completed, 15 tokens, " in d.stderr.text
        d.stop()
        assert "HTTP Request" not in d.stderr.text
    finally:
        for d in daemons.values():
            d.stop()
            rmtree(d.tmp)


def test_daemon_reload_rereads_the_config_file(fake: FakeLLMProcess, workdir: Path) -> None:
    d = start_daemon(config={"provider": {}, "model": None})
    try:
        failed = run_cli("send", "hi", env=d.env(), cwd=workdir)
        assert failed.returncode == 1
        assert "opencode daemon restart" in failed.stderr
        write_config(d.config, fake.url)  # now with a key and the fake's URL
        res = run_cli("daemon", "reload", env=d.env(XDG_CONFIG_HOME=str(d.tmp / "xdg")))
        assert res.returncode == 0, res.stderr
        d.stderr.wait_for("config reloaded; usable providers: anthropic")

        fake.push(text=["reloaded"])
        ok = run_cli("send", "hi", env=d.env(), cwd=workdir)
        assert (ok.returncode, ok.stdout) == (0, "reloaded\n"), ok.stderr
        assert d.proc.poll() is None  # the same daemon, not a new one
    finally:
        d.stop()
        rmtree(d.tmp)


def test_send_continue_waits_for_a_running_turn_then_sends(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["still going"], hang=True)
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir)).id
        c.sessions.submit(sid, "long")
        wait_for(lambda: c.sessions.get(sid).status == "busy", what="the turn to run")
        fake.push(text=["my turn"])
        child = spawn_cli(["send", "-c", "next"], daemon.env(), workdir)
        try:
            child.expect_exact("waiting for the session's running turn")
            assert c.sessions.abort(sid)  # the running turn ends; the waiting send goes on
            child.expect_exact("my turn")
            child.expect(pexpect.EOF)
            child.close()
        finally:
            child.close(force=True)
    assert child.exitstatus == 0


@pytest.mark.parametrize("suffix", ["/v1", "/v1/"])
def test_anthropic_base_url_with_v1_works(fake: FakeLLMProcess, workdir: Path, suffix: str) -> None:
    d = start_daemon(fake.url + suffix)
    try:
        fake.push(text=["root or v1"])
        res = run_cli("send", "hi", env=d.env(), cwd=workdir)
        assert (res.returncode, res.stdout) == (0, "root or v1\n"), res.stderr
    finally:
        d.stop()
        rmtree(d.tmp)

"""Running the real daemon, the fake LLM and the installed ``opencode`` as subprocesses.

The CLI tests treat everything as a black box, the way a user's shell does: a daemon started with
``opencoded --port 0 --socket … --data-dir … --config …`` (its ready line parsed from stderr), the
fake LLM from ``python -m tests.fakes.llm`` scripted over ``POST /_push``, and ``opencode`` run
from the venv's bin directory.

A CLI test module gets its fixtures with one line, ``fake, daemon, workdir = cli_fixtures("ocx")``:
the fake LLM and a daemon using it (both for the module), and a fresh short directory per test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:  # the benchmarks import this module too: pytest and pexpect when used
    import pexpect

BIN = Path(sys.executable).parent
OPENCODE = str(BIN / "opencode")
OPENCODED = str(BIN / "opencoded")
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
T = TypeVar("T")


def short_tmp(prefix: str = "occ") -> Path:
    """AF_UNIX paths must stay under 108 bytes: pytest's tmp_path can be too deep."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that would point a CLI elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENCODE_", "XDG_RUNTIME_DIR"))
        and k not in ("NO_COLOR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    }
    env.update(extra)
    return env


class StderrWatch:
    """Drains a process's stderr in a thread (so the pipe never fills) and finds lines in it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        proc.stderr.close()  # the pump owns the pipe: closed at the process's end
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    raise RuntimeError(f"no {prefix!r} line; stderr was:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


@attrs.define
class DaemonProcess:
    proc: subprocess.Popen[str]
    stderr: StderrWatch
    tmp: Path
    socket: Path
    data_dir: Path
    config: Path
    tcp_url: str

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def env(self, **extra: str) -> dict[str, str]:
        """An environment where this daemon is the default (socket, data dir, no auto-start)."""
        base = {
            "OPENCODE_SOCKET": str(self.socket),
            "OPENCODE_DATA_DIR": str(self.data_dir),
            "OPENCODE_CONFIG": str(self.config),
            "OPENCODE_NO_AUTOSTART": "1",
        }
        base.update(extra)
        return clean_env(**base)

    def stop(self) -> int:
        return stop_process(self.proc)


def write_config(path: Path, llm_url: str | None, extra: dict[str, Any] | None = None) -> None:
    config: dict[str, Any] = {"model": "anthropic/claude-sonnet-4-5"}
    base = llm_url or "http://127.0.0.1:9"  # nothing listens on the discard port
    config["provider"] = {"anthropic": {"options": {"apiKey": "test", "baseURL": base}}}
    config.update(extra or {})
    path.write_text(json.dumps(config))


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def start_daemon(
    llm_url: str | None = None,
    *,
    tmp: Path | None = None,
    config: dict[str, Any] | None = None,
    args: Sequence[str] = (),
) -> DaemonProcess:
    """``opencoded`` on port 0 and a short socket; returns once its ready line is printed."""
    tmp = tmp or short_tmp()
    sock, data, cfg = tmp / "d.sock", tmp / "data", tmp / "opencode.json"
    if not cfg.exists():
        write_config(cfg, llm_url, config)
    cmd = [OPENCODED, "--port", "0", "--socket", str(sock), "--data-dir", str(data)]
    proc = subprocess.Popen(
        [*cmd, "--config", str(cfg), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        # Its working directory (the default for a session with none given) must not be
        # the dir holding the data dir: the daemon refuses that as too broad a root.
        cwd=_mkdir(tmp / "work"),
    )
    watch = StderrWatch(proc)
    try:
        ready = watch.wait_for("opencoded ready:")
    except RuntimeError:
        stop_process(proc)
        raise
    tcp = next((w for w in ready.split() if w.startswith(("http://", "https://"))), "")
    return DaemonProcess(proc, watch, tmp, sock, data, cfg, tcp)


@attrs.define
class FakeLLMProcess:
    """``python -m tests.fakes.llm`` in its own process, scripted over HTTP."""

    proc: subprocess.Popen[str]
    stderr: StderrWatch
    url: str

    def push(self, **reply: Any) -> None:
        """Queue a reply: fields of ``tests.fakes.llm.Reply``; tool_calls as id/name/input."""
        self.control("/_push", reply)

    def control(self, path: str, body: dict[str, Any]) -> None:
        """POST to one of the fake's control routes (`/_push`, `/_window`, …)."""
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with _no_proxy().open(req, timeout=10) as resp:
            assert resp.status < 300

    def requests(self) -> list[dict[str, Any]]:
        with _no_proxy().open(f"{self.url}/_requests", timeout=10) as resp:
            return json.loads(resp.read())["requests"]

    def stop(self) -> None:
        stop_process(self.proc)


def _no_proxy() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_fake_llm() -> FakeLLMProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=clean_env(),
    )
    watch = StderrWatch(proc)
    try:
        ready = watch.wait_for("fake-llm ready:")
    except RuntimeError:
        stop_process(proc)
        raise
    return FakeLLMProcess(proc, watch, ready.split()[-1])


def run_cli(
    *args: str,
    env: dict[str, str],
    input: str | None = None,
    cwd: Path | str | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``opencode``; stdin is empty (not a terminal) unless ``input`` is given."""
    return subprocess.run(
        [OPENCODE, *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cli_fixtures(prefix: str) -> tuple[Any, Any, Any]:
    """The fixtures `fake`, `daemon` (module-scoped) and `workdir` (per test, named with
    `prefix`), to assign at a test module's top level."""
    import pytest

    @pytest.fixture(scope="module", name="fake")
    def fake_fixture() -> Iterator[FakeLLMProcess]:
        llm = start_fake_llm()
        yield llm
        llm.stop()

    @pytest.fixture(scope="module", name="daemon")
    def daemon_fixture(fake: FakeLLMProcess) -> Iterator[DaemonProcess]:
        d = start_daemon(fake.url)
        yield d
        d.stop()
        rmtree(d.tmp)

    @pytest.fixture(name="workdir")
    def workdir_fixture() -> Iterator[Path]:
        path = short_tmp(prefix)
        yield path.resolve()
        rmtree(path)

    return fake_fixture, daemon_fixture, workdir_fixture


def wait_for(condition: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy (bounded); returns that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def spawn_cli(
    args: Sequence[str], env: dict[str, str], cwd: Path | str, timeout: float = 20
) -> pexpect.spawn:
    """``opencode ARGS`` in a pseudo-terminal (200 columns), as a person would run it."""
    import pexpect

    return pexpect.spawn(
        OPENCODE,
        list(args),
        env=env,
        cwd=str(cwd),
        encoding="utf-8",
        timeout=timeout,
        dimensions=(40, 200),
    )

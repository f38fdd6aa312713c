"""schemathesis against a real daemon: the OpenAPI document describes it exactly.

The daemon runs as a subprocess with the fake LLM as its provider (so message routes run
real turns), reached over TCP with its token. `st run` uses every check (server errors,
status codes, content types, headers, response schemas, negative and positive data,
auth, Allow on 405, use-after-free...) in all phases, stateful ones following the
document's links. Bounded: a fixed number of examples per operation and a fixed seed, so
CI is repeatable; set OPENCODE_ST_SEED / OPENCODE_ST_EXAMPLES to explore further.

Left out: the three streaming operations (`/events`, `/sessions/{id}/events` and the
WebSocket `/sessions/{id}/stream`): an SSE response never ends and a WebSocket is not
plain HTTP; tests/test_streams.py covers them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cli_support import REPO, short_tmp

ST = Path(sys.executable).parent / "st"
STREAMING = r"(/events$|/stream$)"


def wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited: {path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {path}: {path.read_text()}")


@pytest.fixture
def served() -> Iterator[tuple[str, str, Path]]:
    """(daemon URL, token, temp dir): fake LLM and daemon as subprocesses."""
    tmp = short_tmp("ost")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fake_log = tmp / "fake.log"
        with fake_log.open("wb") as err:
            fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.llm"], cwd=REPO, stderr=err)
        procs.append(fake)
        fake_url = wait_for(fake_log, r"fake-llm ready: (\S+)", fake)
        config = {
            "model": "anthropic/claude-sonnet-5-5",
            "provider": {"anthropic": {"options": {"apiKey": "k", "baseURL": fake_url}}},
            "server": {"rateLimit": None},
        }
        (tmp / "opencode.json").write_text(json.dumps(config))
        project = tmp / "proj"
        (project / "src").mkdir(parents=True)
        (project / "src" / "main.py").write_text("print('hi')\n")
        daemon_log = tmp / "daemon.log"
        env = {**os.environ, "OPENCODE_CONFIG": str(tmp / "opencode.json")}
        with daemon_log.open("wb") as err:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "opencoded", "--port", "0",
                 "--socket", str(tmp / "d.sock"), "--data-dir", str(tmp / "data")],
                cwd=project, stderr=err, env=env,
            )  # fmt: skip
        procs.append(daemon)
        url = wait_for(daemon_log, r"opencoded ready: (http://\S+)", daemon)
        yield url, (tmp / "data" / "token").read_text().strip(), tmp
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(420)
def test_schemathesis_finds_no_failure(served: tuple[str, str, Path]) -> None:
    url, token, tmp = served
    seed = os.environ.get("OPENCODE_ST_SEED", "20261130")
    examples = os.environ.get("OPENCODE_ST_EXAMPLES", "20")
    args = [
        str(ST), "--no-color", "--config-file", str(REPO / "tests" / "schemathesis.toml"),
        "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", examples,
        "--seed", seed,
        "--workers", "1",
        "--request-timeout", "20",
        "--exclude-path-regex", STREAMING,
        "--max-failures", "50",
    ]  # fmt: skip
    res = subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=400)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-12000:]
    # Every selected operation was tested (new routes count without editing this test).
    selected = re.search(r"Operations:\s+(\d+) selected", out)
    assert selected and re.search(rf"Tested: {selected.group(1)}\b", out), out[-3000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", out), out[-3000:]

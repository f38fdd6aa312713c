"""The spec's client snippets (server-api.md, "Client SDKs") run as written against a real daemon.

Only the URL changes (``http://localhost:8080`` becomes the test daemon's); the token is found the
way the clients find it by default (here the data dir's ``token`` file, via ``OPENCODE_DATA_DIR``).
The JavaScript one imports ``@opencode/client`` from a project where ``npm install <sdk folder>``
is the only step.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import rmtree, short_tmp
from tests.client_tools import SDK, Rig, need_node, need_tool, open_rig, run_checked

SPEC_URL = "http://localhost:8080"

# Verbatim from server-api.md.
JAVASCRIPT = """\
import { OpenCodeClient } from '@opencode/client'

const client = new OpenCodeClient('http://localhost:8080')

// Create session
const session = await client.sessions.create({
  provider: 'anthropic',
  model: 'claude-3-5-sonnet'
})

// Send message
for await (const chunk of client.sessions.message(session.id, {
  text: 'Add tests'
})) {
  console.log(chunk)
}
"""

PYTHON = """\
from opencode import Client

client = Client("http://localhost:8080")

# Create session
session = client.sessions.create(
    provider="anthropic",
    model="claude-3-5-sonnet"
)

# Send message
for chunk in client.sessions.message(session.id, text="Add tests"):
    print(chunk)
"""


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from open_rig()


def snippet_env(rig: Rig) -> dict[str, str]:
    env = rig.env()
    for name in ("OPENCODE_SOCKET", "OPENCODE_TOKEN", "OPENCODE_URL"):
        env.pop(name, None)
    return env  # OPENCODE_DATA_DIR stays: the token file is found there


def test_python_snippet(rig: Rig) -> None:
    rig.fake.push(text=["Tests ", "added"])
    code = PYTHON.replace(SPEC_URL, rig.daemon.tcp_url)
    assert code.count(rig.daemon.tcp_url) == 1
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=snippet_env(rig),
        cwd=rig.workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "type='text-delta'" in lines[0]
    assert "type='complete'" in lines[-1]
    assert "'status': 'completed'" in lines[-1]
    assert rig.fake.requests()[-1]["body"]["model"] == "claude-3-5-sonnet"


@pytest.mark.timeout(120)
def test_javascript_snippet(rig: Rig) -> None:
    node = need_node()
    npm = need_tool("npm", "the snippet imports @opencode/client installed with npm")
    project = short_tmp("ocjs")
    try:
        (project / "package.json").write_text('{"name": "snippet", "private": true}\n')
        run_checked(
            [npm, "install", "--no-audit", "--no-fund", "--offline", str(SDK)],
            env=rig.env(),
            cwd=project,
            timeout=90,
        )
        script = project / "snippet.mjs"
        script.write_text(JAVASCRIPT.replace(SPEC_URL, rig.daemon.tcp_url))
        rig.fake.push(text=["Tests ", "added"])
        output = run_checked([node, str(script)], env=snippet_env(rig), cwd=project, timeout=30)
        assert "type: 'text-delta'" in output
        assert "type: 'complete'" in output
        assert "status: 'completed'" in output
        assert rig.fake.requests()[-1]["body"]["model"] == "claude-3-5-sonnet"
    finally:
        rmtree(Path(project))


def test_opencode_is_the_same_client_and_cheap_to_import() -> None:
    import opencode
    import opencode_cli

    assert opencode.Client is opencode_cli.Client
    assert opencode.AsyncClient is opencode_cli.AsyncClient
    assert opencode.SessionNotFoundError is opencode_cli.SessionNotFoundError
    assert set(opencode.__all__) == set(opencode_cli.__all__)
    with pytest.raises(AttributeError):
        _ = opencode.Nope  # type: ignore[attr-defined]
    probe = (
        "import opencode, sys; "
        "print(sorted(m for m in ('httpx', 'opencode_cli._client') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr

"""Cold start: the daemon serves before it imports what only a turn (or a feature) needs.

The real `opencoded` main() runs in a subprocess (tests/daemon_imports.py) and reports its
loaded modules at checkpoints; no timing (docs/performance.md has the numbers).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from opencoded.http.app import LazyBuilderRule
from opencoded.providers import discovery
from opencoded.providers.base import ProviderError

from .conftest import RunningDaemon
from .fakes.llm import Reply, open_fake_llm

ROOT = Path(__file__).resolve().parent.parent

# Heavy packages that serving needs none of: provider SDKs (and pydantic, which only they
# bring), MCP (and anyio, its async layer), the TUI, metrics, web fetching (httpx; its CLI
# brings rich), HTML conversion.
NOT_BEFORE_A_TURN = {
    "anthropic",
    "openai",
    "pydantic",
    "mcp",
    "textual",
    "prometheus_client",
    "httpx",
    "httpx2",
    "anyio",
    "markdownify",
    "rich",
}


async def run_checkpoints(
    tmp: Path, config: dict[str, Any], steps: list[list[Any]]
) -> dict[str, Any]:
    """Run the daemon through `steps`: {checkpoint label: top-level modules loaded,
    "gc-" + label: the garbage collector's state}."""
    (tmp / "opencode.json").write_text(json.dumps(config))
    args = [
        sys.executable, "-m", "tests.daemon_imports", json.dumps(steps), "--",
        "--port", "0", "--socket", str(tmp / "d.sock"), "--data-dir", str(tmp / "data"),
        "--config", str(tmp / "opencode.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    with trio.fail_after(50):
        done = await trio.run_process(
            args, cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    out = done.stdout.decode()
    assert "FAILED" not in out, out + done.stderr.decode()
    assert done.returncode == 0, done.stderr.decode()
    found: dict[str, Any] = {}
    for line in out.splitlines():
        if not line.startswith(("MODULES ", "GC ")):
            continue
        kind, label, data = line.split(" ", 2)
        if kind == "MODULES":
            found[label] = set(json.loads(data))
        elif kind == "GC":
            found[f"gc-{label}"] = json.loads(data)
    return found


async def test_serving_and_model_discovery_load_no_sdk(tmpdir_short: Path) -> None:
    """Health, the session routes and the background discovery of an OpenAI-compatible
    server's models all work without the provider SDKs or the tools' libraries; the first
    turn on that provider loads its SDK (the openai one), and only that one."""
    project = tmpdir_short / "proj"
    project.mkdir()
    async with open_fake_llm(models=["discovered-model"]) as fake:
        local = {"type": "openai-compatible", "options": {"baseURL": fake.openai_url}}
        config = {"provider": {"local": local}, "model": "local/discovered-model"}
        fake.push(Reply(text=["Hello"]))
        steps = [
            ["get", "/health"],
            ["until", "/models", "discovered-model"],  # discovery is done
            ["post", "/sessions", {"directory": str(project)}],
            ["get", "/sessions"],
            ["get", "/sessions/{sid}"],
            ["modules", "idle"],
            ["stream", "/sessions/{sid}/messages", {"parts": [{"type": "text", "text": "hi"}]}],
            ["modules", "after-turn"],
        ]
        loaded = await run_checkpoints(tmpdir_short, config, steps)
        assert fake.requests[-1].path == "/v1/chat/completions"  # the turn reached the fake
    assert "quart" in loaded["idle"]  # the report is real
    assert not loaded["idle"] & NOT_BEFORE_A_TURN, loaded["idle"] & NOT_BEFORE_A_TURN
    assert "openai" in loaded["after-turn"]
    assert "anthropic" not in loaded["after-turn"]
    # The collector, off during start-up, runs again, and skips what start-up made.
    assert loaded["gc-idle"]["enabled"] is True
    assert loaded["gc-idle"]["frozen"] > 10_000


def test_server_module_imports_nothing_heavy() -> None:
    """Importing the daemon's entry points (what runs before the ready line)."""
    code = (
        "import sys, json, opencoded.main, opencoded.server\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert "hypercorn" in loaded
    assert not loaded & NOT_BEFORE_A_TURN, loaded & NOT_BEFORE_A_TURN


async def test_discovery_errors_are_provider_errors() -> None:
    """What a failed discovery logs: the same wording as the provider's other errors."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ProviderError, match=r"^local unreachable at http://127\.0\.0\.1:\d+/v1/"):
        await discovery.list_model_ids(
            "local", f"http://127.0.0.1:{port}/v1", None, timeout=5, key_hint="k"
        )
    with pytest.raises(ProviderError, match="must be an http"):
        await discovery.list_model_ids("local", "file:///etc", None, timeout=5, key_hint="k")
    async with open_fake_llm() as fake:
        assert await discovery.list_model_ids(
            "local", fake.openai_url + "/", "sk-x", timeout=5, key_hint="k"
        ) == ["fake-model", "qwen2.5-coder:7b"]
        with pytest.raises(ProviderError, match=r"local: not found \(404\)"):
            await discovery.list_model_ids("local", fake.url, None, timeout=5, key_hint="k")


async def test_routes_still_build_urls(daemon: RunningDaemon) -> None:
    """Route URL builders are compiled on first use (http/app.py LazyBuilderRule), and
    then work as werkzeug's own: every route builds its URL back from its arguments."""
    app = daemon.daemon.app
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert len(rules) > 20
    assert all(isinstance(rule, LazyBuilderRule) for rule in rules)
    for rule in rules:
        values = {name: f"x{i}" for i, name in enumerate(sorted(rule.arguments))}
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule).format_map(values)
        assert rule.build(values) == ("", path)
        assert rule.build({**values, "q": "1"}) == ("", f"{path}?q=1")
        assert rule.build(values, append_unknown=False) == ("", path)

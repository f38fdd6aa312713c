"""The TypeScript SDK (sdk/typescript, ``@opencode/client``): its Node test suite against a real
daemon (TCP with the token, and the Unix socket) whose provider is the fake LLM."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.client_tools import SDK, Rig, need_node, node_major, open_rig, run_checked


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from open_rig()


@pytest.mark.timeout(240)
def test_node_suite_passes(rig: Rig) -> None:
    node = need_node()
    files = sorted(str(p.relative_to(SDK)) for p in (SDK / "test").glob("*.test.js"))
    assert len(files) >= 2
    # One file at a time: the tests share the fake LLM's reply queue. Node 20 has a global
    # WebSocket (the browser entry's) only behind a flag; 22 has it by default.
    flags = ["--experimental-websocket"] if node_major(node) == 20 else []
    output = run_checked(
        [node, *flags, "--test", "--test-concurrency=1", "--test-timeout=60000", *files],
        env=rig.env(),
        cwd=SDK,
        timeout=200,
    )
    assert "# fail 0" in output, output
    assert "# pass 0" not in output, output


def test_package_is_installable_as_is() -> None:
    """`npm install <folder>` needs nothing built: what package.json names exists."""
    package = json.loads((SDK / "package.json").read_text())
    assert package["name"] == "@opencode/client"
    assert package["type"] == "module"
    assert "scripts" not in package or "prepare" not in package["scripts"]
    targets = [package["main"], package["types"]]
    for entry in package["exports"].values():
        targets += entry.values() if isinstance(entry, dict) else [entry]
    for target in targets:
        assert (SDK / target).is_file(), target
    assert not package.get("dependencies"), "the SDK has no runtime dependencies"


@pytest.mark.timeout(120)
def test_types_compile() -> None:
    """index.d.ts is valid TypeScript and types the documented uses (and refuses wrong ones):
    test/types/usage.ts compiled by the pinned compiler (`npm ci` in sdk/typescript)."""
    node = need_node()
    tsc = SDK / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        message = "no TypeScript compiler: run `npm ci` in sdk/typescript (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run_checked([node, str(tsc), "-p", "test/types"], env=dict(os.environ), cwd=SDK, timeout=100)

"""`GET /metrics` on a real daemon: present, valid Prometheus text, authenticated on TCP, and
counting what happened (turns through the fake LLM, followers over real sockets).

No timing is asserted: durations only have to be counted (and positive).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningDaemon, query_test_db, short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
from tests.test_agent import TurnStream, message_body, new_session, provider_config, run_turn
from tests.test_streams import sse, unix_ws

HISTOGRAMS = {
    "opencode_turn_duration_seconds",
    "opencode_turn_first_token_seconds",
    "opencode_turn_overhead_seconds",
    "opencode_provider_latency_seconds",
    "opencode_store_commit_seconds",
}
COUNTERS = {"opencode_turns", "opencode_provider_errors", "opencode_events"}
GAUGES = {
    "opencode_watchers",
    "opencode_turns_running",
    "opencode_sessions_open",
    "opencode_store_queued_writes",
}


@attrs.frozen
class Scrape:
    types: dict[str, str]  # family name -> type
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def parse(text: str) -> Scrape:
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(types, samples)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def until(client: httpx.AsyncClient, check, timeout: float = 10) -> Scrape:
    """Scrape until `check(scrape)` holds (a follower subscribes once its handshake is
    done, a turn leaves its session just after its last event): bounded."""
    with trio.fail_after(timeout):
        while not check(got := await scrape(client)):
            await trio.sleep(0.01)
    return got


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


async def llm_daemon(nursery: trio.Nursery, fake: FakeLLM) -> RunningDaemon:
    return await start_daemon(nursery, short_tmp(), provider_config(fake))


async def test_metrics_are_valid_prometheus_text(daemon: RunningDaemon) -> None:
    async with daemon.unix() as client:
        got = await scrape(client)
    for name in HISTOGRAMS - {"opencode_provider_latency_seconds"}:
        assert got.types[name] == "histogram", name
        assert got.value(f"{name}_bucket", le="+Inf") == got.value(f"{name}_count")
    assert got.types["opencode_provider_latency_seconds"] == "histogram"
    assert {name: got.types[name] for name in COUNTERS} == dict.fromkeys(COUNTERS, "counter")
    assert {name: got.types[name] for name in GAUGES} == dict.fromkeys(GAUGES, "gauge")
    assert got.value("opencode_turns_total", status="completed") == 0
    assert got.value("opencode_turns_running") == 0
    assert got.value("opencode_sessions_open") == 0
    assert got.value("opencode_store_queued_writes") == 0


async def test_metrics_need_the_token_on_tcp(daemon: RunningDaemon) -> None:
    async with daemon.tcp(token=False) as anonymous:
        refused = await anonymous.get("/metrics")
        wrong = await anonymous.get("/metrics", headers={"Authorization": "Bearer sk-nope"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert wrong.status_code == 401
    async with daemon.tcp() as client:
        assert (await scrape(client)).types["opencode_turns"] == "counter"
    async with daemon.unix() as trusted:  # the socket's file mode is the access control
        assert (await scrape(trusted)).types["opencode_turns"] == "counter"


async def test_turn_and_event_counts(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await llm_daemon(nursery, fake)
    turns = 3
    fake.push(*[Reply(text=["Hel", "lo"]) for _ in range(turns)])
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        for _ in range(turns):
            events = await run_turn(client, sid, "hi")
            assert events[-1]["data"]["status"] == "completed"
        got = await until(client, lambda s: s.value("opencode_sessions_open") == 0)
    stored = query_test_db(running.data_dir, "SELECT COUNT(*) FROM events")[0][0]
    assert got.value("opencode_turns_total", status="completed") == turns
    assert got.value("opencode_turns_total", status="error") == 0
    for name in (
        "opencode_turn_duration_seconds",
        "opencode_turn_first_token_seconds",
        "opencode_turn_overhead_seconds",
    ):
        assert got.value(f"{name}_count") == turns, name
        assert got.value(f"{name}_bucket", le="+Inf") == turns, name
    assert got.value("opencode_turn_duration_seconds_sum") > 0
    assert got.value("opencode_turn_first_token_seconds_sum") > 0
    latency = "opencode_provider_latency_seconds"
    assert got.value(f"{latency}_count", provider="anthropic") == turns  # one request each
    assert got.value(f"{latency}_sum", provider="anthropic") > 0
    assert stored >= turns * 4  # two text-deltas, a message and a complete per turn
    assert got.value("opencode_events_total") == stored
    assert got.value("opencode_store_commit_seconds_count") > 0
    assert got.value("opencode_turns_running") == 0
    await running.shutdown()


async def test_provider_errors_by_provider_and_code(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await llm_daemon(nursery, fake)
    fake.push(
        Reply(status=429, retry_after=0),  # retried, then the answer
        Reply(text=["after the wait"]),
        Reply(status=401),  # not retried: the turn ends with the error
    )
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        first = await run_turn(client, sid, "hi")
        second = await run_turn(client, sid, "again")
        got = await scrape(client)
    assert first[-1]["data"]["status"] == "completed"
    assert second[-1]["data"]["status"] == "error"
    errors = "opencode_provider_errors_total"
    assert got.value(errors, provider="anthropic", code="RATE_LIMITED") == 1
    assert got.value(errors, provider="anthropic", code="PROVIDER_ERROR") == 1
    assert sum(v for (name, _), v in got.samples.items() if name == errors) == 2
    assert got.value("opencode_turns_total", status="completed") == 1
    assert got.value("opencode_turns_total", status="error") == 1
    assert got.value("opencode_turn_duration_seconds_count") == 2
    assert got.value("opencode_turn_overhead_seconds_count") == 1  # completed turns only
    await running.shutdown()


async def test_running_turn_while_it_waits_for_permission(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await llm_daemon(nursery, fake)  # bash: ask (the default)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": "true"})]),
        Reply(text=["done"]),
    )
    async with running.unix() as client, running.unix() as other:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("run it")) as r:
            stream = TurnStream(r)
            pid = (await stream.until("permission"))["data"]["id"]
            waiting = await scrape(other)
            answer = await other.post(
                f"/sessions/{sid}/permissions/{pid}", json={"response": "reject"}
            )
            assert answer.status_code == 200, answer.text
            events = await stream.rest()
        assert events[-1]["data"]["status"] == "completed"
        after = await until(other, lambda s: s.value("opencode_turns_running") == 0)
    assert waiting.value("opencode_turns_running") == 1
    assert waiting.value("opencode_sessions_open") == 1
    assert waiting.value("opencode_watchers", stream="session") == 1  # the message's stream
    assert waiting.value("opencode_turns_total", status="completed") == 0
    assert after.value("opencode_turns_total", status="completed") == 1
    await running.shutdown()


async def test_watchers_and_open_sessions(daemon: RunningDaemon, project_dir: Path) -> None:
    async with daemon.unix() as client, daemon.unix() as feed_client:
        first = await new_session(client, project_dir)
        second = await new_session(client, project_dir)
        async with (
            unix_ws(daemon, f"/sessions/{first}/stream"),
            unix_ws(daemon, f"/sessions/{first}/stream"),
            unix_ws(daemon, f"/sessions/{second}/stream"),
            sse(client, f"/sessions/{second}/events"),
            sse(feed_client, "/events"),
        ):
            got = await until(client, lambda s: s.value("opencode_watchers", stream="session") == 4)
            assert got.value("opencode_watchers", stream="feed") == 1
            assert got.value("opencode_sessions_open") == 2
            assert got.value("opencode_turns_running") == 0
        gone = await until(
            client,
            lambda s: (
                s.value("opencode_watchers", stream="session") == 0
                and s.value("opencode_sessions_open") == 0
            ),
        )
    assert gone.value("opencode_watchers", stream="session") == 0


def test_the_daemon_does_not_import_prometheus_client_to_start() -> None:
    """Start-up (target: health in 250 ms) does not pay the library's import: the first
    scrape does (routes/metrics.py)."""
    code = (
        "import sys, importlib, opencoded.main, opencoded.server\n"
        "from opencoded.http import routes\n"
        "for name in routes.MODULES: importlib.import_module(f'opencoded.http.routes.{name}')\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

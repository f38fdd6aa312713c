"""Many sessions streaming at once: N concurrent turns, every delta timed end to end.

    python -m bench.bench_load [--sessions 1000] [--deltas 100] [--rate 50] [--baseline 10]

Three processes per scenario, each on its own (the machine has 2 cores, so they share):

- **the fake LLM**: a minimal Anthropic-protocol SSE server written for this benchmark
  (raw trio sockets, pre-encoded chunks), because the quart-based `tests.fakes.llm` costs
  more per event than the daemon does and would be what is measured. Each reply is
  `--deltas` text deltas at `--rate` per second; each delta's text is the CLOCK_MONOTONIC
  time it was sent.
- **the daemon** (`opencoded`, Anthropic provider pointed at the fake).
- **the load generator**: N clients in one trio process, each over its own Unix-socket
  connection: `POST /sessions/:id/messages` and read the NDJSON until `complete`. It parses
  as little as possible (a regex over the chunk for the delta stamps), so the clients stay
  cheaper than what they measure. Latency of a delta = client receive time - fake send
  time: the fake's socket, the SDK, storage (the group commit), fan-out, the NDJSON write.

Measured: turns completed, errors, per-delta latency p50/p99/max, the daemon's CPU (user +
system, from /proc, over the streaming window) and peak RSS (VmHWM), RSS idle with the
sessions created and after the turns. The baseline is the same thing with `--baseline`
sessions, in the same run, each scenario on a fresh daemon.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from .common import Daemon, env_info, pct, table

# A delta's text is the fake's send time and a space; deltas the daemon merged (it fell
# behind, or they came in one read) carry several.
STAMPS = re.compile(
    rb'"type":"text-delta","seq":\d+,"data":\{"message_id":"[^"]*","text":"([0-9. ]+)"'
)
COMPLETE = re.compile(rb'"type":"complete".*?"status":"(\w+)"')


# ---- the fake LLM (child process) --------------------------------------------------------------


def _chunk(event: str, data: dict[str, Any]) -> bytes:
    body = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(body), body)


HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)
MESSAGE = {
    "id": "msg_bench", "type": "message", "role": "assistant", "content": [],
    "model": "claude-sonnet-4-5", "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1},
}  # fmt: skip
OPENING = _chunk("message_start", {"type": "message_start", "message": MESSAGE}) + _chunk(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
CLOSING = (
    _chunk("content_block_stop", {"type": "content_block_stop", "index": 0})
    + _chunk(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 100},
        },
    )
    + _chunk("message_stop", {"type": "message_stop"})
    + b"0\r\n\r\n"
)
DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"%.6f "}}\n\n'
)


async def _fake_connection(stream: trio.SocketStream, deltas: int, rate: float) -> None:
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            while len(buffer) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            buffer = buffer[length:]
            await stream.send_all(HEAD + OPENING)
            start = time.monotonic()
            for i in range(deltas):
                if rate > 0:
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await trio.sleep(delay)
                body = DELTA % time.monotonic()
                await stream.send_all(b"%x\r\n%s\r\n" % (len(body), body))
            await stream.send_all(CLOSING)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def serve_fake(deltas: int, rate: float) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(f"fake ready http://127.0.0.1:{port}", flush=True)

    async def handler(stream: trio.SocketStream) -> None:
        await _fake_connection(stream, deltas, rate)

    await trio.serve_listeners(handler, listeners)


# ---- the load generator (child process) ---------------------------------------------------------


RETRIES = {"count": 0}


async def _http(sock: str, method: str, path: str, body: dict[str, Any]) -> trio.SocketStream:
    """Send one request on a new connection.

    A thousand connects at once overflow the listen backlog (the kernel then refuses or
    resets some); like a real client, retry after a short pause, and count it.
    """
    data = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    for attempt in range(50):
        try:
            stream = await trio.open_unix_socket(sock)
            await stream.send_all(head + data)
            return stream
        except (OSError, trio.BrokenResourceError):
            if attempt == 49:
                raise
            RETRIES["count"] += 1
            await trio.sleep(0.05 + random.random() * 0.1)
    raise AssertionError("unreachable")


async def _read_all(stream: trio.SocketStream) -> bytes:
    out = b""
    while data := await stream.receive_some(65536):
        out += data
    return out


async def create_sessions(sock: str, count: int, workdir: str) -> list[str]:
    ids: list[str] = []
    limiter = trio.CapacityLimiter(32)

    async def one() -> None:
        async with limiter:
            stream = await _http(sock, "POST", "/sessions", {"directory": workdir})
            async with stream:
                raw = await _read_all(stream)
        match = re.search(rb'"id":\s*"(session_[^"]+)"', raw)
        if match is None:
            raise RuntimeError(f"session create failed: {raw[:300]!r}")
        ids.append(match.group(1).decode())

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return ids


async def run_turn(sock: str, sid: str, latencies: list[float], result: dict[str, int]) -> None:
    body = {"parts": [{"type": "text", "text": "go"}]}
    try:
        stream = await _http(sock, "POST", f"/sessions/{sid}/messages", body)
    except (OSError, trio.BrokenResourceError):
        result["connect_errors"] += 1
        return
    pending = b""
    status_seen = False
    async with stream:
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            now = time.monotonic()
            if not data:
                break
            pending += data
            if not status_seen:
                if b"\r\n\r\n" not in pending:
                    continue
                if not pending.startswith(b"HTTP/1.1 200"):
                    result["http_errors"] += 1
                    return
                status_seen = True
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue
            ready, pending = pending[: cut + 1], pending[cut + 1 :]
            for stamps in STAMPS.findall(ready):
                latencies += [now - float(stamp) for stamp in stamps.split()]
            done = COMPLETE.search(ready)
            if done:
                key = "completed" if done.group(1) == b"completed" else "turn_errors"
                result[key] += 1
                return
    result["cut"] += 1


async def load(sock: str, sessions: int, workdir: str) -> None:
    ids = await create_sessions(sock, sessions, workdir)
    print(json.dumps({"created": len(ids)}), flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)  # the parent samples idle RSS first
    latencies: list[float] = []
    result = {"completed": 0, "turn_errors": 0, "http_errors": 0, "connect_errors": 0, "cut": 0}
    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for sid in ids:
            nursery.start_soon(run_turn, sock, sid, latencies, result)
    result["wall"] = time.monotonic() - start  # type: ignore[assignment]
    result["connect_retries"] = RETRIES["count"]
    result["latencies"] = latencies  # type: ignore[assignment]
    print(json.dumps(result), flush=True)


# ---- the parent --------------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.bench_load", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def scenario(sessions: int, deltas: int, rate: float, workdir: str) -> dict[str, Any]:
    fake = _child("--serve-fake", str(deltas), str(rate))
    assert fake.stdout is not None
    url = fake.stdout.readline().split()[-1]
    config = json.dumps(
        {
            "model": "anthropic/claude-sonnet-4-5",
            "provider": {"anthropic": {"options": {"apiKey": "test", "baseURL": url}}},
        }
    )
    daemon = Daemon(config=config)
    client = _child("--client", str(daemon.socket), str(sessions), workdir)
    assert client.stdout is not None and client.stdin is not None
    try:
        json.loads(client.stdout.readline())
        rss_idle = daemon.rss_mb()
        cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
        client.stdin.write("go\n")
        client.stdin.flush()
        line = client.stdout.readline()
        cpu = daemon.cpu_seconds() - cpu0
        wall = time.monotonic() - t0
        if not line:
            raise RuntimeError("the load generator died")
        result = json.loads(line)
        time.sleep(0.5)
        result.update(
            cpu=cpu,
            span=wall,
            rss_idle=rss_idle,
            rss_after=daemon.rss_mb(),
            hwm=daemon.status("VmHWM"),
        )
        return result
    finally:
        client.kill()
        daemon.close()
        fake.kill()
        fake.wait()
        client.wait()


def row(sessions: int, deltas: int, r: dict[str, Any]) -> list[str]:
    lat = [x * 1000 for x in r["latencies"]]
    errors = r["turn_errors"] + r["http_errors"] + r["connect_errors"] + r["cut"]
    events = len(lat)
    return [
        str(sessions),
        f"{r['completed']}/{sessions}",
        str(errors),
        f"{events}/{sessions * deltas}",
        f"{pct(lat, 50):.1f}" if lat else "-",
        f"{pct(lat, 99):.1f}" if lat else "-",
        f"{max(lat):.0f}" if lat else "-",
        f"{r['span']:.1f}",
        f"{events / r['span']:.0f}",
        f"{r['cpu']:.1f} ({r['cpu'] / r['span'] * 100:.0f}%)",
        f"{r['rss_idle']:.0f}",
        f"{r['hwm']:.0f}",
        f"{r['rss_after']:.0f}",
        str(r["connect_retries"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--deltas", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="deltas/s per stream (0: burst)")
    parser.add_argument("--serve-fake", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        trio.run(serve_fake, int(args.serve_fake[0]), float(args.serve_fake[1]))
        return
    if args.client:
        sock, count, workdir = args.client
        trio.run(load, sock, int(count), workdir)
        return

    import tempfile

    workdir = tempfile.mkdtemp(prefix="ocl", dir="/tmp")
    rows = []
    for n in (args.baseline, args.sessions):
        result = scenario(n, args.deltas, args.rate, workdir)
        rows.append(row(n, args.deltas, result))
    header = [
        "sessions", "completed", "errors", "deltas seen", "lat p50 ms", "lat p99 ms",
        "lat max ms", "span s", "deltas/s", "daemon CPU s", "RSS idle MB", "peak RSS MB",
        "RSS after MB", "connect retries",
    ]  # fmt: skip
    title = (
        f"bench_load: {args.deltas} deltas per turn at {args.rate:g}/s per stream, all turns "
        f"started at once ({env_info()}); latency = fake send -> client receive"
    )
    print(table(title, header, rows))
    Path(workdir).rmdir()


if __name__ == "__main__":
    main()

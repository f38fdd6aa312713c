"""Fan-out: N watchers on one session, M `text-delta` events, stored-to-watcher latency.

    python -m bench.bench_fanout [--watchers 1,10,100,1000] [--events 10000]
        [--max-deliveries 500000] [--rate 0] [--tree before=/path/to/old/checkout ...]

Each scenario runs a fresh daemon in a subprocess (this module with `--serve`), so its
peak RSS (VmHWM) is the daemon's alone. The parent connects the watchers (raw sockets
with minimal parsing, so the clients are not what is measured), then tells the daemon
to append the events to the session's real EventLog: real SQLite group commit, real
fan-out, real hypercorn. The daemon stamps each event when its commit callback runs
(CLOCK_MONOTONIC, shared by both processes); the parent stamps each arrival. Delay of a
delivery = its arrival at one watcher - stored; "last" = arrival at the last watcher.

For each number of watchers: WebSocket and SSE watchers of the daemon, and two floors
measured in the same run: a bare trio server (`--serve-bare`: no ASGI, no storage; the
same pre-encoded frames fanned out through memory channels, everything ready written in
one `send_all`, the same watcher clients), which is the transport's floor; and an
in-process trio memory-channel fan-out (no sockets at all, same batching). Each point sends
min(--events, --max-deliveries / watchers) events, so 1,000 watchers stay affordable.

`--tree LABEL=PATH` runs the daemon scenarios again from another checkout (its own
`bench/bench_fanout.py --serve`), for a before/after in one run.

`--rate 0` appends as fast as the daemon takes them (in slices of 50 per scheduler
tick, as a fast provider stream would): latency then includes the backlog, and the
throughput column is the daemon's ceiling. `--rate R` paces R events/s.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from .common import env_info, pct, table

SEQ = re.compile(rb'"seq":(\d+)')
SSE_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")
SLICE = 50  # events appended per scheduler tick in burst mode
HERE = Path(__file__).resolve().parent.parent


# ---- the daemon side (child process) -------------------------------------------------------


async def serve(tmp: Path) -> None:
    """Run a daemon; on `run SID N WATCHERS RATE` append N events and write stamps."""
    from opencoded.config import load_config
    from opencoded.server import run_daemon

    config_file = tmp / "opencode.json"
    config_file.write_text("{}")
    overrides = {
        "server": {"host": "127.0.0.1", "port": 0, "socket": str(tmp / "d.sock")},
        "dataDir": str(tmp / "data"),
    }
    cfg = load_config(config_file, env={}, overrides=overrides)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        daemon = await nursery.start(
            lambda task_status: run_daemon(cfg, stop=stop, task_status=task_status)
        )
        print(f"ready {daemon.endpoints.tcp} {daemon.token}", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        while True:
            chunk = await stdin.receive_some()
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _, sid, n, watchers, rate = line.decode().split()
                await append_events(daemon, tmp, sid, int(n), int(watchers), float(rate))
                print("done", flush=True)
        stop.set()


async def append_events(
    daemon: Any, tmp: Path, sid: str, n: int, watchers: int, rate: float
) -> None:
    async with daemon.sessions.hold(sid) as runtime:
        await _append_events(runtime.log, tmp, n, watchers, rate)


async def _append_events(log: Any, tmp: Path, n: int, watchers: int, rate: float) -> None:
    with trio.fail_after(60):
        while log.watcher_count < watchers:
            await trio.sleep(0.01)
    stored: dict[int, float] = {}
    publish = log._on_commit  # instrumentation: stamp each event as its commit is published

    def stamped(event: Any) -> None:
        stored[event.seq] = time.monotonic()
        publish(event)

    log._on_commit = stamped
    text = "token "  # a typical delta is a word or two
    start = time.monotonic()
    for i in range(n):
        await log.append("text-delta", {"message_id": "msg_bench", "text": text})
        if rate > 0:
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
        elif i % SLICE == SLICE - 1:
            await trio.sleep(0)
    await log.wait_committed(log.last_seq)
    log._on_commit = publish
    (tmp / "stored.json").write_text(json.dumps(stored))


def child_main(tmp: str) -> None:
    trio.run(serve, Path(tmp))


# ---- the transport's floor: a bare trio server (child process) ---------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B5C"


def ws_frame_bytes(text: str) -> bytes:
    """One unmasked, final text frame (what the server side of RFC 6455 sends)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def sse_chunk(seq: int, text: str) -> bytes:
    message = f"id: {seq}\nevent: text-delta\ndata: {text}\n\n".encode()
    return f"{len(message):x}\r\n".encode() + message + b"\r\n"


async def serve_bare(tmp: Path) -> None:
    """Pre-encoded frames fanned out through memory channels, all that is ready in one
    `send_all` per watcher: no ASGI, no storage, no JSON per watcher."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    port = listeners[0].socket.getsockname()[1]
    watchers: dict[str, set[trio.MemorySendChannel[bytes]]] = {"ws": set(), "sse": set()}
    async with trio.open_nursery() as nursery:
        handler = functools.partial(bare_connection, watchers)
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        print(f"ready http://127.0.0.1:{port} -", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        while chunk := await stdin.receive_some():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _, _, n, count, rate = line.decode().split()
                await bare_publish(watchers, tmp, int(n), int(count), float(rate))
                print("done", flush=True)
        nursery.cancel_scope.cancel()


async def bare_connection(
    watchers: dict[str, set[trio.MemorySendChannel[bytes]]], stream: trio.SocketStream
) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some()
        if not chunk:
            return
        head += chunk
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
    if b"sec-websocket-key" in headers:
        kind = "ws"
        digest = hashlib.sha1(headers[b"sec-websocket-key"] + WS_GUID).digest()
        reply = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + base64.b64encode(digest)
            + b"\r\n\r\n"
        )
    else:
        kind = "sse"
        reply = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
    await stream.send_all(reply)
    send, receive = trio.open_memory_channel[bytes](math.inf)
    watchers[kind].add(send)
    async with receive:
        async for first in receive:
            batch = [first]
            while True:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await stream.send_all(b"".join(batch))


async def bare_publish(
    watchers: dict[str, set[trio.MemorySendChannel[bytes]]],
    tmp: Path,
    n: int,
    count: int,
    rate: float,
) -> None:
    with trio.fail_after(60):
        while sum(len(w) for w in watchers.values()) < count:
            await trio.sleep(0.01)
    stored: dict[int, float] = {}
    start = time.monotonic()
    for seq in range(1, n + 1):
        text = json.dumps(
            {"type": "text-delta", "seq": seq, "message_id": "msg_bench", "text": "token "},
            separators=(",", ":"),
        )
        encoded = {"ws": ws_frame_bytes(text), "sse": sse_chunk(seq, text)}
        stored[seq] = time.monotonic()
        for kind, sends in watchers.items():
            for send in sends:
                send.send_nowait(encoded[kind])
        if rate > 0:
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
        elif seq % SLICE == 0:
            await trio.sleep(0)
    for sends in watchers.values():
        for send in sends:
            send.close()
        sends.clear()
    (tmp / "stored.json").write_text(json.dumps(stored))


# ---- the watcher side (parent process) ------------------------------------------------------


class DaemonProcess:
    """The daemon (`--serve`, from `tree`) or the bare floor server (`--serve-bare`)."""

    def __init__(self, tree: Path | None = None, *, bare: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ocf", dir="/tmp"))
        self.bare = bare
        mode = "--serve-bare" if bare else "--serve"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_fanout", mode, str(self.tmp)],
            cwd=tree or HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "stderr.log", "wb"),  # noqa: SIM115 - lives with the child
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise RuntimeError((self.tmp / "stderr.log").read_text())
        self.url, self.token = line[1], line[2]
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def status(self, key: str) -> float:
        """A /proc/PID/status size in MB (VmRSS now, VmHWM peak)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    async def create_session(self) -> str:
        if self.bare:
            return "bare"
        reply = await http_request(self, "POST", "/sessions", b"{}")
        return json.loads(reply)["id"]

    async def run(self, sid: str, events: int, watchers: int, rate: float) -> dict[int, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"run {sid} {events} {watchers} {rate}\n".encode())
        self.proc.stdin.flush()
        line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        if line.strip() != b"done":
            raise RuntimeError((self.tmp / "stderr.log").read_text())
        stored = json.loads((self.tmp / "stored.json").read_text())
        return {int(k): v for k, v in stored.items()}

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


async def http_request(daemon: DaemonProcess, method: str, path: str, body: bytes) -> bytes:
    stream = await trio.open_tcp_stream(daemon.host, daemon.port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {daemon.host}\r\nConnection: close\r\n"
        f"Authorization: Bearer {daemon.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    await stream.aclose()
    return data.split(b"\r\n\r\n", 1)[1]


async def open_watcher(
    daemon: DaemonProcess, kind: str, sid: str
) -> tuple[trio.SocketStream, bytes]:
    """Connect and finish the handshake; return the stream and bytes already read past it."""
    stream = await trio.open_tcp_stream(daemon.host, daemon.port)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    if kind == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /sessions/{sid}/stream?after=0 HTTP/1.1\r\nHost: {daemon.host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        expect = b" 101 "
    else:
        head = f"GET /sessions/{sid}/events?after=0 HTTP/1.1\r\nHost: {daemon.host}\r\n"
        expect = b" 200 "
    head += f"Authorization: Bearer {daemon.token}\r\n\r\n"
    await stream.send_all(head.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some()
    status, rest = data.split(b"\r\n\r\n", 1)
    if expect not in status.split(b"\r\n")[0]:
        raise RuntimeError(status.decode(errors="replace"))
    return stream, rest


async def watch(
    daemon: DaemonProcess, kind: str, sid: str, total: int, arrivals: list[float], ready: Any
) -> None:
    """Read until seq `total`, stamping each event's arrival (index: seq)."""
    stream, buffer = await open_watcher(daemon, kind, sid)
    ready()
    last = 0
    parse = parse_ws if kind == "ws" else parse_sse
    while last < total:
        chunk = await stream.receive_some(1 << 18)
        if not chunk:
            raise RuntimeError(f"the server closed a watcher at seq {last} of {total}")
        buffer += chunk
        now = time.monotonic()
        seqs, buffer = parse(buffer)
        for seq in seqs:
            arrivals[seq] = now
            last = seq
    await stream.aclose()


def parse_ws(buffer: bytes) -> tuple[list[int], bytes]:
    """Complete server frames (unmasked) -> their seqs; the incomplete tail is kept."""
    seqs, pos, size = [], 0, len(buffer)
    while size - pos >= 2:
        length, start = buffer[pos + 1] & 0x7F, pos + 2
        if length == 126:
            if size - pos < 4:
                break
            length, start = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            if size - pos < 10:
                break
            length, start = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), pos + 10
        if size < start + length:
            break
        if buffer[pos] & 0x0F == 1:  # text frame
            match = SEQ.search(buffer, start, start + length)
            if match:
                seqs.append(int(match.group(1)))
        pos = start + length
    return seqs, buffer[pos:]


def parse_sse(buffer: bytes) -> tuple[list[int], bytes]:
    """Complete SSE messages (inside HTTP chunks, one message per chunk) -> seqs."""
    end = buffer.rfind(b"\n\n")
    if end < 0:
        return [], buffer
    return [int(m) for m in SSE_ID.findall(buffer, 0, end + 2)], buffer[end + 2 :]


async def scenario(
    kind: str, watchers: int, events: int, rate: float, label: str, tree: Path | None = None
) -> dict[str, Any]:
    bare = label == "bare"
    daemon = DaemonProcess(tree, bare=bare)
    try:
        sid = await daemon.create_session()
        rss_before = daemon.status("VmRSS")
        arrivals = [[0.0] * (events + 1) for _ in range(watchers)]
        connected = 0

        def ready() -> None:
            nonlocal connected
            connected += 1

        async with trio.open_nursery() as nursery:
            for i in range(watchers):
                nursery.start_soon(watch, daemon, kind, sid, events, arrivals[i], ready)
            stored = await daemon.run(sid, events, watchers, rate)
        name = f"{kind.upper()}, {label}"
        return summary(name, watchers, events, stored, arrivals) | {
            "rss_before": rss_before,
            "peak": daemon.status("VmHWM"),
        }
    finally:
        daemon.close()


def summary(
    name: str, watchers: int, events: int, stored: dict[int, float], arrivals: list[list[float]]
) -> dict[str, Any]:
    seqs = range(1, events + 1)
    delays = [a[seq] - stored[seq] for a in arrivals for seq in seqs]
    last = [max(a[seq] for a in arrivals) - stored[seq] for seq in seqs]
    span = max(max(a) for a in arrivals) - min(stored.values())
    return {
        "watchers": watchers,
        "scenario": name,
        "events": events,
        "p50": pct(delays, 50),
        "p99": pct(delays, 99),
        "last_p99": pct(last, 99),
        "seconds": span,
        "deliveries": events * watchers / span,
        "rss_before": float("nan"),
        "peak": float("nan"),
    }


async def memory_channel_floor(watchers: int, events: int) -> dict[str, Any]:
    """The same fan-out with nothing but trio memory channels: no storage, no sockets."""
    sent: dict[int, float] = {}
    arrivals = [[0.0] * (events + 1) for _ in range(watchers)]
    channels = [trio.open_memory_channel[int](math.inf) for _ in range(watchers)]

    async def receive(i: int) -> None:
        receive = channels[i][1]
        async for first in receive:  # then all that is ready, as the servers do
            now, ready = time.monotonic(), [first]
            while True:
                try:
                    ready.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for seq in ready:
                arrivals[i][seq] = now

    async with trio.open_nursery() as nursery:
        for i in range(watchers):
            nursery.start_soon(receive, i)
        for seq in range(1, events + 1):
            sent[seq] = time.monotonic()
            for send, _ in channels:
                send.send_nowait(seq)  # unbounded here: the floor, not the policy
            if seq % SLICE == 0:
                await trio.sleep(0)
        for send, _ in channels:
            await send.aclose()
    return summary("memory channels (floor)", watchers, events, sent, arrivals)


def parse_trees(values: list[str]) -> list[tuple[str, Path | None]]:
    trees: list[tuple[str, Path | None]] = []
    for value in values:
        label, _, path = value.partition("=")
        trees.append((label, Path(path).resolve() if path else None))
    return trees or [("daemon", None)]


async def main(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.watchers.split(",")]
    trees = parse_trees(args.tree)
    results = []
    for watchers in counts:
        events = min(args.events, max(100, args.max_deliveries // watchers))
        print(f"{watchers} watcher(s) x {events} events ...", file=sys.stderr, flush=True)
        results.append(await memory_channel_floor(watchers, events))
        results.append(await scenario("ws", watchers, events, args.rate, "bare"))
        for kind in ("ws", "sse"):
            for label, tree in trees:
                print(f"  {kind} {label}", file=sys.stderr, flush=True)
                results.append(await scenario(kind, watchers, events, args.rate, label, tree))
    rate = "as fast as possible" if args.rate <= 0 else f"{args.rate:g} events/s offered"
    rows = [
        [
            str(r["watchers"]),
            r["scenario"],
            str(r["events"]),
            f"{r['deliveries']:,.0f}",
            f"{r['p50'] * 1000:,.1f}",
            f"{r['p99'] * 1000:,.1f}",
            f"{r['last_p99'] * 1000:,.1f}",
            f"{r['seconds']:.2f}",
            f"{r['rss_before']:.0f}",
            f"{r['peak']:.0f}",
        ]
        for r in results
    ]
    header = [
        "watchers",
        "scenario",
        "events",
        "deliveries/s",
        "delay p50 ms",
        "p99 ms",
        "last p99 ms",
        "total s",
        "RSS idle MB",
        "peak RSS MB",
    ]
    title = f"fan-out: text-delta events, {rate}; stored -> watcher ({env_info()})"
    print(table(title, header, rows))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", default="1,10,100,1000", help="comma-separated counts")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--max-deliveries", type=int, default=500_000)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: as fast as possible")
    parser.add_argument(
        "--tree", action="append", default=[], help="LABEL=PATH: also run this checkout's daemon"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        child_main(args.serve)
    elif args.serve_bare:
        trio.run(serve_bare, Path(args.serve_bare))
    else:
        trio.run(main, args)


if __name__ == "__main__":
    cli()

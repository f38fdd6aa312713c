"""One instance, then two behind nginx, on one PostgreSQL; one SQLite instance as baseline.

    python -m bench.bench_cluster [--sessions 1000] [--deltas 20] [--rate 50]

Each scenario on fresh processes: the fast fake LLM of bench_load, a throwaway PostgreSQL
(tests/pg_support.py, fsync off), the instances, nginx with the configuration of
docs/scaling.md, and one load generator process (trio, raw HTTP/1.1 over TCP with the
cluster's token, through nginx). Measured: session creates per second (32 at a time), then
N turns streaming at once (POST /messages, NDJSON read until `complete`): completed, wall
time, deltas per second, per-delta latency (client receive - fake send).

On this 2-core machine every process shares the same two cores, so two instances cannot
be twice one: the ratio says what the coordination through PostgreSQL costs, not what a
second machine would add. Results: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_load import COMPLETE, STAMP
from bench.common import Daemon, env_info, pct, table
from tests import pg_support
from tests.test_cluster import free_port, nginx_config


async def _request(
    host: str, port: int, token: str, method: str, path: str, body: dict
) -> trio.SocketStream:
    data = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    for attempt in range(50):
        try:
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(head + data)
            return stream
        except (OSError, trio.BrokenResourceError):  # a backlog overflow: retry, like a client
            if attempt == 49:
                raise
            await trio.sleep(0.05)
    raise AssertionError("unreachable")


async def _read_all(stream: trio.SocketStream) -> bytes:
    out = b""
    while data := await stream.receive_some(65536):
        out += data
    return out


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:  # reset: counted as an error by the caller
        return b""


async def _client(port: int, token: str, sessions: int, workdir: str) -> None:
    ids: list[str] = []
    limiter = trio.CapacityLimiter(32)

    async def create() -> None:
        async with limiter:
            stream = await _request("127.0.0.1", port, token, "POST", "/sessions", {
                "directory": workdir})  # fmt: skip
            async with stream:
                raw = await _read_all(stream)
        match = re.search(rb'"id":\s*"(ses[^"]+)"', raw)
        if match is None:
            raise RuntimeError(f"session create failed: {raw[:300]!r}")
        ids.append(match.group(1).decode())

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(create)
    creates = sessions / (time.monotonic() - start)

    latencies: list[float] = []
    result = {"completed": 0, "errors": 0}

    async def turn(sid: str) -> None:
        body = {"parts": [{"type": "text", "text": "go"}]}
        try:
            stream = await _request("127.0.0.1", port, token, "POST", f"/sessions/{sid}/messages",
                                    body)  # fmt: skip
        except (OSError, trio.BrokenResourceError):
            result["errors"] += 1
            return
        pending = b""
        async with stream:
            while data := await _receive(stream):
                now = time.monotonic()
                pending += data
                cut = pending.rfind(b"\n")
                if cut < 0:
                    continue
                ready, pending = pending[: cut + 1], pending[cut + 1 :]
                latencies.extend(now - float(s) for s in STAMP.findall(ready))
                if done := COMPLETE.search(ready):
                    result["completed" if done.group(1) == b"completed" else "errors"] += 1
                    return
        result["errors"] += 1

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for sid in ids:
            nursery.start_soon(turn, sid)
    wall = time.monotonic() - start
    print(json.dumps({"creates": creates, "wall": wall, "latencies": latencies, **result}))


def _fake(deltas: int, rate: float) -> tuple[subprocess.Popen[str], str]:
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_load", "--serve-fake", str(deltas), str(rate)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert fake.stdout is not None
    return fake, fake.stdout.readline().split()[-1]


def scenario(kind: str, instances: int, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    fake, url = _fake(args.deltas, args.rate)
    config = json.dumps({
        "model": "anthropic/claude-sonnet-4-5",
        "provider": {"anthropic": {"options": {"apiKey": "test", "baseURL": url}}},
        "server": {"rateLimit": None},  # one token, a thousand clients: not what is measured
    })  # fmt: skip
    pg = pg_support.start_server() if kind == "postgres" else None
    database = ["--database", pg.new_database()] if pg else []
    daemons: list[Daemon] = []
    nginx = None
    prefix = Path(tempfile.mkdtemp(prefix="ocbn", dir="/tmp"))
    try:
        daemons = [Daemon(*database, config=config) for _ in range(instances)]
        port = int(daemons[0].url.rsplit(":", 1)[1])
        if pg is not None:  # behind nginx
            prefix.chmod(0o777)
            port = free_port()
            upstreams = [d.url.removeprefix("http://") for d in daemons]
            (prefix / "nginx.conf").write_text(nginx_config(upstreams, port, prefix))
            nginx = subprocess.Popen(
                ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g",
                 "daemon off;"]
            )  # fmt: skip
            time.sleep(0.5)  # a benchmark, not a test: nginx binds within this
        out = subprocess.run(
            [sys.executable, "-m", "bench.bench_cluster", "--client", str(port),
             daemons[0].token, str(args.sessions), workdir],
            capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"the load generator failed ({kind}, {instances}): {out.stderr}")
        return json.loads(out.stdout)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        for d in daemons:
            d.close()
        if pg is not None:
            pg.stop()
        fake.kill()
        fake.wait()
        shutil.rmtree(prefix, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, token, sessions, workdir = args.client
        trio.run(_client, int(port), token, int(sessions), workdir)
        return
    workdir = tempfile.mkdtemp(prefix="ocbw", dir="/tmp")
    rows = []
    results = {}
    for kind, n in (("sqlite", 1), ("postgres", 1), ("postgres", 2)):
        r = results[(kind, n)] = scenario(kind, n, args, workdir)
        lat = [x * 1000 for x in r["latencies"]]
        rows.append([
            kind, f"{n}{' + nginx' if kind == 'postgres' else ''}", f"{r['creates']:.0f}",
            f"{r['completed']}/{args.sessions}", str(r["errors"]), f"{r['wall']:.1f}",
            f"{len(lat) / r['wall']:.0f}", f"{pct(lat, 50):.0f}" if lat else "-",
            f"{pct(lat, 99):.0f}" if lat else "-",
        ])  # fmt: skip
    print(env_info())
    print(table(
        f"{args.sessions} sessions, {args.deltas} deltas each at {args.rate:g}/s",
        ["store", "instances", "creates/s", "turns ok", "errors", "wall s", "deltas/s",
         "p50 ms", "p99 ms"],
        rows,
    ))  # fmt: skip
    one, two = results[("postgres", 1)], results[("postgres", 2)]
    creates, walls = two["creates"] / one["creates"], one["wall"] / two["wall"]
    print(f"2 instances / 1 (PostgreSQL, nginx): creates x{creates:.2f}, turns x{walls:.2f}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

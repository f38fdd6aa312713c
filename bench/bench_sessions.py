"""Session create throughput and `GET /sessions?limit=50` latency with 10,000 sessions.

Baselines in the same run: the same SQLite statements without the daemon (the storage
floor), and a bare ASGI app on hypercorn answering a fixed body (the HTTP floor).

    python -m bench.bench_sessions [--sessions 10000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from .common import Daemon, env_info, ms, pct, table

BARE_APP = r"""
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve
body = open(sys.argv[2], "rb").read()
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": message["type"] + ".complete"})
            if kind == "shutdown":
                return
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
cfg = Config(); cfg.bind = [f"unix:{sys.argv[1]}"]; cfg.accesslog = None; cfg.errorlog = None
trio.run(serve, app, cfg)
"""


def create_sessions(daemon: Daemon, count: int, threads: int = 4) -> float:
    """Create `count` sessions from `threads` keep-alive connections; return seconds."""
    per_thread = count // threads
    directory = daemon.tmp / "work"  # not /tmp: the daemon refuses such broad roots
    directory.mkdir(exist_ok=True)

    def work() -> None:
        with daemon.unix_client() as c:
            for _ in range(per_thread):
                r = c.post("/sessions", json={"directory": str(directory)})
                assert r.status_code == 201, r.text

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def list_latency(client: httpx.Client, rounds: int = 300) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        r = client.get("/sessions", params={"limit": 50})
        samples.append(time.perf_counter() - start)
        assert r.status_code == 200 and len(r.json()) == 50
    return samples


def sqlite_floor(count: int) -> tuple[float, list[float]]:
    path = Path(tempfile.mkdtemp()) / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE s (n INTEGER PRIMARY KEY, id TEXT UNIQUE, created INT, updated INT,"
        " provider TEXT, model TEXT, project TEXT, directory TEXT, title TEXT, permission TEXT)"
    )
    start = time.perf_counter()
    for i in range(count):
        conn.execute(
            "INSERT INTO s VALUES (NULL,?,?,?,?,?,?,?,?,?)",
            (f"session_{i:020d}", 1, 1, None, None, "p", "/tmp", "t", "{}"),
        )  # one transaction per create, as the daemon answers each create durably
    created = time.perf_counter() - start
    samples = []
    for _ in range(300):
        t = time.perf_counter()
        rows = conn.execute("SELECT * FROM s ORDER BY n DESC LIMIT 50").fetchall()
        json.dumps([list(r) for r in rows])
        samples.append(time.perf_counter() - t)
    return created, samples


def bare_http_latency(body: bytes) -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="ocb", dir="/tmp"))
    (tmp / "body.json").write_bytes(body)
    sock = tmp / "bare.sock"
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(sock), str(tmp / "body.json")])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://localhost") as c:
            samples = []
            for _ in range(300):
                t = time.perf_counter()
                c.get("/sessions?limit=50").raise_for_status()
                samples.append(time.perf_counter() - t)
            return samples
    finally:
        proc.terminate()
        proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    args = parser.parse_args()
    daemon = Daemon()
    try:
        with daemon.unix_client() as unix, daemon.tcp_client() as tcp:
            create_s = create_sessions(daemon, args.sessions)
            rss = daemon.rss_mb()
            unix_lat = list_latency(unix)
            tcp_lat = list_latency(tcp)
            body = unix.get("/sessions", params={"limit": 50}).content
    finally:
        daemon.close()
    floor_create, floor_list = sqlite_floor(args.sessions)
    bare = bare_http_latency(body)
    rows = [
        ["daemon, unix socket", f"{args.sessions / create_s:,.0f}",
         ms(pct(unix_lat, 50)), ms(pct(unix_lat, 99))],
        ["daemon, TCP + token", "", ms(pct(tcp_lat, 50)), ms(pct(tcp_lat, 99))],
        ["baseline: bare ASGI on hypercorn (unix)", "", ms(pct(bare, 50)), ms(pct(bare, 99))],
        ["baseline: sqlite3 alone, no HTTP", f"{args.sessions / floor_create:,.0f}",
         ms(pct(floor_list, 50)), ms(pct(floor_list, 99))],
    ]  # fmt: skip
    print(
        table(
            f"Sessions: {args.sessions:,} stored ({env_info()}); daemon RSS {rss:.0f} MB",
            ["what", "creates/s", "list50 p50 ms", "list50 p99 ms"],
            rows,
        )
    )


if __name__ == "__main__":
    main()

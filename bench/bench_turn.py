"""What the daemon adds to a turn: time to first token and to the end of a 200-token turn.

    python -m bench.bench_turn [--runs 50] [--tokens 200] [--no-openai]

The fake LLM (`python -m tests.fakes.llm`, its own process) answers every request with a
scripted stream: `--tokens` text deltas, no artificial delay. Two ways to get the same
reply, measured in the same run, alternating so drift hits both alike:

- **direct** (the baseline): this process calls the fake with the provider's own SDK
  (`anthropic.Anthropic().messages.create(stream=True)`, or `openai.OpenAI()...`) and
  iterates the events: the work a client does without the daemon.
- **daemon**: `POST /sessions/:id/messages` over the Unix socket (a fresh session per run,
  created before the clock starts; one new connection per turn, as a CLI would), reading
  the NDJSON lines (each one `json.loads`ed) until the first `text-delta` and until
  `complete`. The daemon makes the SDK call to the fake itself.

"adds" = daemon - direct, per percentile. Also the daemon's RSS right after start (no
SDK imported yet) and after the runs (the SDKs imported, the turns done).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli_support import start_fake_llm

from .common import Daemon, env_info, ms, pct, table

PROMPT = "say something"


def daemon_config(fake_url: str) -> str:
    return json.dumps(
        {
            "model": "anthropic/claude-sonnet-4-5",
            "provider": {
                "anthropic": {"options": {"apiKey": "test", "baseURL": fake_url}},
                "openai": {"options": {"apiKey": "test", "baseURL": f"{fake_url}/v1"}},
            },
        }
    )


# ---- the daemon path: a minimal HTTP/1.1 client over the Unix socket ------------------------


def _request(sock_path: Path, method: str, path: str, body: dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock_path))
    conn.sendall(head + data)
    return conn


def _read_head(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed in the headers: {buffer!r}")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    return status, headers, rest


def _chunks(conn: socket.socket, rest: bytes) -> Any:
    """Decoded chunked-body data, as it arrives."""
    buffer = rest
    while True:
        while b"\r\n" not in buffer:
            more = conn.recv(65536)
            if not more:
                return
            buffer += more
        size_line, buffer = buffer.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return
        while len(buffer) < size + 2:
            more = conn.recv(65536)
            if not more:
                raise RuntimeError("connection closed inside a chunk")
            buffer += more
        yield buffer[:size]
        buffer = buffer[size + 2 :]


def post_json(sock_path: Path, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn = _request(sock_path, "POST", path, body)
    try:
        status, headers, rest = _read_head(conn)
        if headers.get("transfer-encoding") == "chunked":
            data = b"".join(_chunks(conn, rest))
        else:
            data = rest
            while len(data) < int(headers.get("content-length", 0)):
                data += conn.recv(65536)
    finally:
        conn.close()
    if status >= 300:
        raise RuntimeError(f"{path}: {status} {data!r}")
    return json.loads(data)


def daemon_turn(sock_path: Path, session_id: str) -> tuple[float, float, int]:
    """(first text-delta, complete, text characters seen), seconds from just before the
    request. Characters, not deltas: deltas that arrive together are merged into one."""
    body = {"parts": [{"type": "text", "text": PROMPT}]}
    start = time.perf_counter()
    conn = _request(sock_path, "POST", f"/sessions/{session_id}/messages", body)
    first = 0.0
    chars = 0
    try:
        status, _, rest = _read_head(conn)
        if status != 200:
            raise RuntimeError(f"messages: {status} {rest!r}")
        pending = b""
        for data in _chunks(conn, rest):
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                event = json.loads(line)
                kind = event["type"]
                if kind == "text-delta":
                    if not chars:
                        first = time.perf_counter() - start
                    chars += len(event["data"]["text"])
                elif kind == "complete":
                    if event["data"]["status"] != "completed":
                        raise RuntimeError(f"turn ended {event['data']['status']}")
                    return first, time.perf_counter() - start, chars
                elif kind == "error":
                    raise RuntimeError(f"turn error: {event['data']}")
    finally:
        conn.close()
    raise RuntimeError("the stream ended without complete")


# ---- the direct path: the SDK straight to the fake ------------------------------------------


def anthropic_direct(
    fake_url: str, messages: list[dict[str, Any]] | None = None
) -> Callable[[], tuple[float, float, int]]:
    """One turn straight through the SDK; `messages`: the conversation to send (default:
    the prompt alone)."""
    import anthropic

    client = anthropic.Anthropic(api_key="test", base_url=fake_url, max_retries=0)
    sent = messages or [{"role": "user", "content": PROMPT}]

    def turn() -> tuple[float, float, int]:
        start = time.perf_counter()
        first = 0.0
        chars = 0
        stream = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=4096, messages=sent, stream=True
        )
        with stream:
            for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    if not chars:
                        first = time.perf_counter() - start
                    chars += len(event.delta.text)
        return first, time.perf_counter() - start, chars

    return turn


def openai_direct(fake_url: str) -> Callable[[], tuple[float, float, int]]:
    import openai

    client = openai.OpenAI(api_key="test", base_url=f"{fake_url}/v1", max_retries=0)

    def turn() -> tuple[float, float, int]:
        start = time.perf_counter()
        first = 0.0
        chars = 0
        stream = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not chars:
                        first = time.perf_counter() - start
                    chars += len(chunk.choices[0].delta.content)
        return first, time.perf_counter() - start, chars

    return turn


# ---- the run -------------------------------------------------------------------------------


def measure(
    label: str,
    runs: int,
    tokens: int,
    fake: Any,
    daemon: Daemon,
    direct: Callable[[], tuple[float, float, int]],
    session_body: dict[str, Any],
    workdir: str,
) -> list[list[str]]:
    text = ["tok "] * tokens
    samples: dict[str, list[tuple[float, float]]] = {"direct": [], "daemon": []}
    for i in range(runs + 2):  # the first two are warm-up (imports, connections, caches)
        for path in ("direct", "daemon") if i % 2 else ("daemon", "direct"):
            fake.push(text=text)
            if path == "direct":
                first, total, seen = direct()
            else:
                sid = post_json(daemon.socket, "/sessions", {"directory": workdir, **session_body})
                first, total, seen = daemon_turn(daemon.socket, sid["id"])
            if seen != len("".join(text)):
                raise RuntimeError(f"{label} {path}: {seen} characters, expected {tokens * 4}")
            if i >= 2:
                samples[path].append((first, total))
    rows = []
    for index, what in ((0, "first token"), (1, f"{tokens}-token turn")):
        d = [s[index] for s in samples["daemon"]]
        b = [s[index] for s in samples["direct"]]
        rows.append(
            [
                f"{label}: {what}",
                ms(pct(b, 50)),
                ms(pct(d, 50)),
                ms(pct(d, 50) - pct(b, 50)),
                ms(pct(b, 99)),
                ms(pct(d, 99)),
                ms(pct(d, 99) - pct(b, 99)),
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--no-openai", action="store_true")
    args = parser.parse_args()

    fake = start_fake_llm()
    workdir = tempfile.mkdtemp(prefix="ocw", dir="/tmp")
    daemon = Daemon(config=daemon_config(fake.url))
    try:
        rss_start = daemon.rss_mb()
        rows = measure(
            "anthropic", args.runs, args.tokens, fake, daemon, anthropic_direct(fake.url), {},
            workdir,
        )  # fmt: skip
        if not args.no_openai:
            rows += measure(
                "openai", args.runs, args.tokens, fake, daemon, openai_direct(fake.url),
                {"provider": "openai", "model": "fake-model"}, workdir,
            )  # fmt: skip
        time.sleep(0.5)  # let the last turn's follow-ups settle
        rss_after = daemon.rss_mb()
        hwm = daemon.status("VmHWM")
    finally:
        daemon.close()
        fake.stop()

    header = ["ms", "direct p50", "daemon p50", "adds p50", "direct p99", "daemon p99", "adds p99"]
    title = (
        f"bench_turn: {args.runs} runs, {args.tokens} deltas, fake LLM with no delay ({env_info()})"
    )
    print(table(title, header, rows))
    print()
    print(
        table(
            "daemon memory (MB)",
            ["RSS at start", "RSS after the runs (SDKs imported)", "peak RSS"],
            [[f"{rss_start:.1f}", f"{rss_after:.1f}", f"{hwm:.1f}"]],
        )
    )


if __name__ == "__main__":
    main()

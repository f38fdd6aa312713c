"""Turn overhead as a session's history grows: 1, 10, 100, 500 earlier turns.

    python -m bench.bench_history [--runs 10] [--tokens 200] [--sizes 1,10,100,500]

For each size H, a session gets H earlier turns (each a `--tokens`-delta reply), then
`--runs` more turns are timed. The baseline, measured in the same run and alternating with
the daemon, is the Anthropic SDK sending the fake the same conversation (H earlier
user/assistant pairs of the same sizes) and reading the same reply: what any client pays
to send a long history. "adds" = daemon - direct: what the daemon's own work per turn
costs as history grows (reading it, rebuilding the context, encoding the request).
Sizes up to 10 use a fresh session per timed turn; larger ones time the runs in one
session (its history grows by `--runs` during the measurement).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from tests.cli_support import start_fake_llm

from .bench_turn import PROMPT, anthropic_direct, daemon_config, daemon_turn, post_json
from .common import Daemon, env_info, ms, pct, table


def direct_with_history(fake_url: str, history: int, reply: str) -> Any:
    messages: list[dict[str, Any]] = []
    for _ in range(history):
        messages += [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": PROMPT})
    return anthropic_direct(fake_url, messages)


def session_with_history(
    daemon: Daemon, fake: Any, workdir: str, turns: int, text: list[str]
) -> str:
    sid = post_json(daemon.socket, "/sessions", {"directory": workdir})["id"]
    for _ in range(turns):
        fake.push(text=text)
        daemon_turn(daemon.socket, sid)
    return sid


def measure(
    size: int, runs: int, text: list[str], fake: Any, daemon: Daemon, workdir: str
) -> list[str]:
    reply = "".join(text)
    direct = direct_with_history(fake.url, size, reply)
    shared = None if size <= 10 else session_with_history(daemon, fake, workdir, size, text)
    samples: dict[str, list[float]] = {"direct": [], "daemon": []}
    for i in range(runs + 1):  # the first is warm-up
        for path in ("direct", "daemon") if i % 2 else ("daemon", "direct"):
            if path == "daemon":
                sid = shared or session_with_history(daemon, fake, workdir, size, text)
                fake.push(text=text)
                _, total, seen = daemon_turn(daemon.socket, sid)
            else:
                fake.push(text=text)
                _, total, seen = direct()
            if seen != len(reply):
                raise RuntimeError(f"{path}: {seen} characters, expected {len(reply)}")
            if i:
                samples[path].append(total)
    d, b = samples["daemon"], samples["direct"]
    return [
        str(size), ms(pct(b, 50)), ms(pct(d, 50)), ms(pct(d, 50) - pct(b, 50)),
        ms(pct(d, 99) - pct(b, 99)),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--sizes", default="1,10,100,500")
    args = parser.parse_args()
    text = ["tok "] * args.tokens
    fake = start_fake_llm()
    workdir = tempfile.mkdtemp(prefix="ocw", dir="/tmp")
    daemon = Daemon(config=daemon_config(fake.url))
    try:
        rows = [
            measure(int(size), args.runs, text, fake, daemon, workdir)
            for size in args.sizes.split(",")
        ]
    finally:
        daemon.close()
        fake.stop()
    title = (
        f"bench_history: {args.runs} timed turns per size, {args.tokens}-delta replies, "
        f"anthropic ({env_info()})"
    )
    header = ["earlier turns", "direct p50", "daemon p50", "adds p50", "adds p99"]
    print(table(title, header, rows))


if __name__ == "__main__":
    main()

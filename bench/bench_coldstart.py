"""Cold start and memory: launch -> first `GET /health` 200, and RSS at idle and after turns.

    python -m bench.bench_coldstart [--runs 7] [--turns] [--tree LABEL=PATH ...]

Each run starts a fresh process and polls `GET /health` over loopback TCP every 2 ms from
the moment of launch (what peerbench's `cold` phase does). Measured per run: wall time to
the first 200, the process's CPU time (user + system) by then (steadier than wall time on
a shared machine), and its RSS then. With `--turns` the daemon then runs one turn on an
OpenAI-compatible provider and one on Anthropic (both the fake LLM, its own process) and
its RSS is read after each, and the time from launch to the end of the first turn.

Variants, run in alternation (run 1 of each, then run 2 of each, ...) so machine noise hits
them alike; medians are reported:

- `opencoded [LABEL]`: the daemon of each `--tree` (put first on PYTHONPATH, e.g. a
  `git archive` of another commit; default: this checkout), with `--env LABEL:NAME=VALUE`
  added to its environment (e.g. `MALLOC_ARENA_MAX=2`; the same path may appear under two
  labels). Its config names the fake as
  an OpenAI-compatible provider with model discovery, as peerbench's does.
- `python -c pass`: interpreter start and exit, the lower bound of any Python daemon.
- `bare quart-trio`: a QuartTrio app with one `/health` route on hypercorn's trio worker:
  the floor of this stack (imports and serving, none of our code).

Note: Python reads bytecode caches but does not write them when PYTHONDONTWRITEBYTECODE
is set (as in this project's development environment); a source tree without
`__pycache__` is then compiled on every start. `--compile` writes the caches of each tree
first (as `pip install` does for an installed package).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.cli_support import rmtree, start_fake_llm

from .common import env_info, proc_cpu_seconds, proc_status_mb

REPO = Path(__file__).resolve().parent.parent

BARE_APP = """
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

app = QuartTrio("bare")

@app.get("/health")
async def health():
    return {"status": "ok"}

config = Config()
config.bind = [f"127.0.0.1:{sys.argv[1]}"]
config.accesslog = None
trio.run(serve, app, config)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> float:
    """Poll until GET /health answers 200; the time of that answer (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return time.perf_counter()
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}") from None
            time.sleep(0.002)
        finally:
            conn.close()
    raise RuntimeError("no /health 200")


def daemon_config(fake_url: str) -> dict[str, Any]:
    return {
        "server": {"rateLimit": None},
        "model": "mock/fake-model",
        "provider": {
            # no models listed: discovery asks the fake (GET /v1/models)
            "mock": {"type": "openai-compatible", "options": {"baseURL": f"{fake_url}/v1"}},
            "anthropic": {"options": {"apiKey": "test", "baseURL": fake_url}},
        },
    }


def request(port: int, method: str, path: str, body: Any = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:200]!r}")
        return raw
    finally:
        conn.close()


def run_turns(port: int, pid: int, workdir: str, idle: float, start: float) -> dict[str, float]:
    """Launch -> the first turn (OpenAI-compatible) done, at once after health 200 like
    peerbench's first message; RSS after it, then after one on Anthropic."""
    out = {}
    for label, model in (("openai-compatible", "mock/fake-model"), ("anthropic", None)):
        body: dict[str, Any] = {"directory": workdir}
        if model is None:
            body |= {"provider": "anthropic", "model": "claude-sonnet-4-5"}
        sid = json.loads(request(port, "POST", "/sessions", body))["id"]
        text = {"parts": [{"type": "text", "text": "hi"}]}
        lines = request(port, "POST", f"/sessions/{sid}/messages", text).splitlines()
        last = json.loads(lines[-1])
        if last["type"] != "complete" or last["data"]["status"] != "completed":
            raise RuntimeError(f"{label} turn: {lines[-3:]}")
        if not out:
            out["first turn done (ms)"] = (time.perf_counter() - start) * 1000
        time.sleep(idle)  # let the turn's background work end before reading RSS
        out[f"RSS after a {label} turn"] = proc_status_mb(pid, "VmRSS")
    return out


def one_run(
    cmd: list[str], env: dict[str, str], port: int, turns: str | None, idle: float
) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/"
    )
    try:
        healthy = wait_health(port, proc)
        out = {
            "health 200 (ms)": (healthy - start) * 1000,
            "CPU by then (ms)": proc_cpu_seconds(proc.pid) * 1000,
            "RSS at health": proc_status_mb(proc.pid, "VmRSS"),
        }
        if turns is not None:
            out |= run_turns(port, proc.pid, turns, idle, start)
        else:
            time.sleep(idle)
            out["RSS idle"] = proc_status_mb(proc.pid, "VmRSS")
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def variants(args: argparse.Namespace, fake_url: str, tmp: Path) -> dict[str, Any]:
    """label -> function(port) -> (argv, env, workdir for turns or None)."""
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE_", "ANTHROPIC_"))
    }
    (tmp / "opencode.json").write_text(json.dumps(daemon_config(fake_url)))
    (tmp / "work").mkdir()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(REPO)}
    out: dict[str, Any] = {}
    for label, path in trees.items():

        def daemon(port: int, path: str = path, label: str = label) -> Any:
            data = tmp / f"data-{label}"  # kept between runs: a restart, not a first start
            sock = tmp / f"{label}.sock"
            argv = [
                sys.executable, "-m", "opencoded", "--host", "127.0.0.1", "--port", str(port),
                "--no-auth", "--socket", str(sock), "--data-dir", str(data),
                "--config", str(tmp / "opencode.json"), "--log-level", "warning",
            ]  # fmt: skip
            env = {**base_env, "PYTHONPATH": path}
            env |= dict(
                e.split(":", 1)[1].split("=", 1) for e in args.env if e.startswith(f"{label}:")
            )
            return argv, env, str(tmp / "work") if args.turns else None

        out[f"opencoded [{label}]"] = daemon
    if not args.no_baselines:
        out["python -c pass"] = lambda port: ([sys.executable, "-c", "pass"], base_env, None)
        out["bare quart-trio"] = lambda port: (
            [sys.executable, "-c", BARE_APP, str(port)],
            base_env,
            None,
        )
    return out


def timed_pass(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--turns", action="store_true", help="RSS after a turn per provider")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument(
        "--env", action="append", default=[], metavar="LABEL:NAME=VALUE", help="for one tree"
    )
    parser.add_argument("--compile", action="store_true", help="write each tree's .pyc first")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds before RSS readings")
    args = parser.parse_args()
    if args.compile:
        for tree in [t.split("=", 1)[1] for t in args.tree] or [str(REPO)]:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", "opencoded"], cwd=tree, env=env
            )
    fake = start_fake_llm()
    tmp = Path(tempfile.mkdtemp(prefix="ocb", dir="/tmp"))
    results: dict[str, list[dict[str, float]]] = {}
    try:
        runs = variants(args, fake.url, tmp)
        for i in range(args.runs + 1):  # round 0 creates the data dirs and warms caches
            for label, make in runs.items():
                port = free_port()
                argv, env, turns = make(port)
                if label == "python -c pass":
                    sample = {"health 200 (ms)": timed_pass(env)}
                else:
                    sample = one_run(argv, env, port, turns, args.idle)
                if i:
                    results.setdefault(label, []).append(sample)
    finally:
        fake.stop()
        rmtree(tmp)
    report(results, args.runs)


def report(results: dict[str, list[dict[str, float]]], runs: int) -> None:
    print(f"bench_coldstart: {runs} alternating runs per variant, medians ({env_info()})")
    print("('health 200' of `python -c pass` is its whole run: start and exit)")
    keys = list(dict.fromkeys(k for samples in results.values() for s in samples for k in s))
    width = max(len(label) for label in results)
    print(f"{'':{width}}  " + "  ".join(f"{k:>26}" for k in keys))
    for label, samples in results.items():
        cells = []
        for key in keys:
            values = [s[key] for s in samples if key in s]
            if not values:
                cells.append(f"{'-':>26}")
                continue
            unit = "" if "(ms)" in key else " MB"
            cell = f"{statistics.median(values):.1f}{unit} (min {min(values):.1f})"
            cells.append(f"{cell:>26}")
        print(f"{label:{width}}  " + "  ".join(cells))


if __name__ == "__main__":
    main()

"""CLI latency: ``opencode send --json`` (first event, completion), ``--help`` and ``status``.

Everything runs in one go against one warm daemon (``opencoded`` on a temp socket) with the fake
LLM answering instantly, so the numbers are the CLI's own cost: interpreter start, imports,
connecting, creating the session, and reading the stream. The baseline is the smallest honest
alternative: an argparse + httpx script doing the same requests.

    .venv/bin/python bench/bench_cli.py [--runs 15]

Before/after a change, with both CLIs measured in alternation under the same load (each tree
is put first on PYTHONPATH, so both are imported the same way; e.g. ``git archive`` two commits):

    .venv/bin/python bench/bench_cli.py --tree before=/tmp/old --tree after=/tmp/new
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cli_support import OPENCODE, rmtree, start_daemon, start_fake_llm

BASELINE = """
import argparse, json, os, sys
p = argparse.ArgumentParser(prog="baseline")
sub = p.add_subparsers(dest="cmd", required=True)
s = sub.add_parser("send"); s.add_argument("message"); s.add_argument("--json", action="store_true")
args = p.parse_args()
import httpx
sock = os.environ["OPENCODE_SOCKET"]
with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://localhost",
                  timeout=httpx.Timeout(5, read=None)) as c:
    sid = c.post("/sessions", json={"directory": os.getcwd()}).json()["id"]
    body = {"parts": [{"type": "text", "text": args.message}]}
    with c.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line:
                sys.stdout.write(line + "\\n"); sys.stdout.flush()
"""


def timed_stream(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, int]:
    """Wall time to the first stdout line and to exit, and the exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    first = time.perf_counter() - start
    proc.communicate()
    return first, time.perf_counter() - start, proc.returncode


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, res.returncode


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{statistics.median(ms):8.1f} {ms[0]:8.1f} {p90:8.1f}"


def compare_trees(trees: dict[str, str], runs: int) -> None:
    """``--help``, ``status`` and ``send`` (first event) for each tree, interleaved run by run."""
    fake = start_fake_llm()
    daemon = start_daemon(fake.url)
    work = tempfile.mkdtemp(prefix="ocb", dir="/tmp")
    commands = {
        "opencode --help": [OPENCODE, "--help"],
        "opencode status": [OPENCODE, "status"],
        "opencode send --json: first event": [OPENCODE, "send", "--json", "hi"],
    }
    samples: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(runs + 1):  # the first round warms caches and is dropped
            for label, cmd in commands.items():
                for tree, path in trees.items():
                    env = {**daemon.env(), "PYTHONPATH": path}
                    fake.push(text=["Hello"])
                    used = _children_cpu()
                    first, _, rc = timed_stream(cmd, env, work)
                    assert rc == 0, (tree, label, rc)
                    samples.setdefault((label, tree), []).append(first)
                    cpu.setdefault((label, tree), []).append(_children_cpu() - used)
    finally:
        daemon.stop()
        fake.stop()
        rmtree(daemon.tmp)
        rmtree(Path(work))
    print(f"{runs} interleaved runs each, wall ms to the first line of output; CPU ms of the")
    print("whole command (user + system; steadier than wall time on a busy machine)")
    width = max(len(f"{label} [{tree}]") for label, tree in samples)
    print(f"{'':{width}} {'median':>8} {'min':>8} {'p90':>8} {'cpu med':>8} {'cpu min':>8}")
    for key, values in samples.items():
        spent = sorted(cpu[key][1:])
        cells = f"{statistics.median(spent) * 1000:8.1f} {spent[0] * 1000:8.1f}"
        print(f"{f'{key[0]} [{key[1]}]':{width}} {summary(values[1:])} {cells}")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    args = parser.parse_args()
    runs = args.runs
    if args.tree:
        compare_trees(dict(t.split("=", 1) for t in args.tree), runs)
        return

    fake = start_fake_llm()
    daemon = start_daemon(fake.url)
    work = tempfile.mkdtemp(prefix="ocb", dir="/tmp")
    script = Path(work) / "baseline.py"
    script.write_text(BASELINE)
    env = daemon.env()
    rows: list[tuple[str, str]] = []
    failures: list[str] = []
    try:
        sends: dict[str, list[str]] = {
            "opencode send --json": [OPENCODE, "send", "--json", "hi"],
            "baseline argparse+httpx send": [sys.executable, str(script), "send", "hi"],
        }
        helps: dict[str, list[str]] = {
            "opencode --help": [OPENCODE, "--help"],
            "opencode status": [OPENCODE, "status"],
            "baseline argparse --help": [sys.executable, str(script), "--help"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        for label, cmd in sends.items():
            fake.push(text=["warm"])
            timed_stream(cmd, env, work)  # warm the page cache and the daemon's code paths
            firsts, totals = [], []
            for _ in range(runs):
                fake.push(text=["Hello", " there", "!"])
                first, total, rc = timed_stream(cmd, env, work)
                if rc != 0:
                    failures.append(f"{label}: exit {rc}")
                    break
                firsts.append(first)
                totals.append(total)
            if firsts:
                rows.append((f"{label}: first event", summary(firsts)))
                rows.append((f"{label}: complete", summary(totals)))
        for label, cmd in helps.items():
            timed_run(cmd, env)
            samples = []
            for _ in range(runs):
                elapsed, rc = timed_run(cmd, env)
                if rc != 0:
                    failures.append(f"{label}: exit {rc}")
                    break
                samples.append(elapsed)
            if samples:
                rows.append((label, summary(samples)))
    finally:
        daemon.stop()
        fake.stop()
        rmtree(daemon.tmp)
        rmtree(Path(work))

    width = max(len(label) for label, _ in rows) if rows else 20
    print(f"{runs} runs each, wall ms (warm daemon, instant fake LLM)")
    print(f"{'':{width}} {'median':>8} {'min':>8} {'p90':>8}")
    for label, cells in rows:
        print(f"{label:{width}} {cells}")
    for failure in failures:
        print("FAILED:", failure)


if __name__ == "__main__":
    main()

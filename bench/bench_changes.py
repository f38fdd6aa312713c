"""What recording file changes (undo, diffs: opencoded.agent.changes) costs per tool call.

    python -m bench.bench_changes [--files 2000] [--size 4096] [--runs 30]

A session directory of `--files` files (`--size` bytes each, in 20 directories) is made in
a temp dir. Measured, in this process (the code the daemon runs in a worker thread):

- **bash call**: two whole-tree snapshots around the command (before, after) with a warm
  index: every file is stat'ed, none is read (nothing changed);
- **bash call, 10 files changed**: the same with 10 files rewritten in between (those are
  read, hashed and stored);
- **write/edit call**: two snapshots of the one target file;
- **first bash call of a session** (cold index: every file read, hashed, stored once);
- **git snapshot** (the baseline: what OpenCode does around each step): `git add -A` and
  `git write-tree` into a separate git dir with the tree as work tree, warm (nothing
  changed), when git is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from opencoded.agent.changes import Blobs, Tracker, compare

from .common import env_info, ms, pct, table


def make_tree(root: Path, files: int, size: int) -> None:
    chunk = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    for i in range(files):
        folder = root / f"pkg{i % 20}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i}.py").write_bytes(chunk[:-8] + f"{i:08d}".encode())


def timed(runs: int, body: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        body()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, data = Path(tmp) / "project", Path(tmp) / "data"
        root.mkdir()
        make_tree(root, args.files, args.size)
        rows = measure(root, data, args.runs)
    print(env_info())
    title = f"{args.files} files of {args.size} bytes, {args.runs} runs"
    print(table(title, ["what", "p50", "p95"], rows))


def measure(root: Path, data: Path, runs: int) -> list[list[str]]:
    rows = []

    def cold() -> None:
        Tracker(root, Blobs(data / f"cold{time.perf_counter_ns()}")).snapshot()

    cold_times = timed(max(3, runs // 10), cold)
    tracker = Tracker(root, Blobs(data / "blobs"))
    tracker.snapshot()

    def bash_call() -> None:
        compare(tracker.snapshot(), tracker.snapshot())

    counter = [0]

    def bash_call_changing() -> None:
        before = tracker.snapshot()
        counter[0] += 1
        for i in range(10):
            (root / f"pkg{i}" / f"mod{i}.py").write_text(f"changed {counter[0]}\n" * 200)
        assert len(compare(before, tracker.snapshot())) == 10

    target = [["pkg3", "mod3.py"]]

    def write_call() -> None:
        compare(tracker.snapshot(target), tracker.snapshot(target))

    for name, body in (
        ("bash call (2 snapshots, nothing changed)", bash_call),
        ("bash call, 10 files changed", bash_call_changing),
        ("write/edit call (2 one-file snapshots)", write_call),
    ):
        times = timed(runs, body)
        rows.append([name, ms(pct(times, 50)), ms(pct(times, 95))])
    rows.append(["first bash call of a session (cold)", ms(pct(cold_times, 50)), "-"])
    if shutil.which("git"):
        times = git_baseline(root, data / "git", runs)
        rows.append(
            ["baseline: git add -A + write-tree (warm)", ms(pct(times, 50)), ms(pct(times, 95))]
        )
    return rows


def git_baseline(root: Path, git_dir: Path, runs: int) -> list[float]:
    env = {**os.environ, "GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(root)}
    subprocess.run(["git", "init", "-q"], env=env, check=True)

    def snapshot() -> None:
        subprocess.run(["git", "add", "-A", "."], env=env, cwd=root, check=True)
        subprocess.run(["git", "write-tree"], env=env, cwd=root, check=True, capture_output=True)

    snapshot()
    return timed(runs, snapshot)


if __name__ == "__main__":
    main()

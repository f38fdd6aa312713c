"""`python -m bench`: every benchmark in turn, each printing its own table.

Each compares against its baseline in the same run; see docs/performance.md for what the
numbers mean and the latest results. Single benchmarks: `python -m bench.bench_turn` etc.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["bench.bench_sessions"],
    ["bench.bench_turn"],
    ["bench.bench_history"],
    ["bench.bench_load", "--sessions", "1000"],
    ["bench.bench_fanout"],
    ["bench.bench_cli"],
    ["bench.bench_changes"],
    ["bench.bench_coldstart", "--turns"],
    ["bench.bench_metrics"],
]


def main() -> int:
    failed = 0
    for argv in BENCHMARKS:
        print(f"\n== python -m {' '.join(argv)}", flush=True)
        failed += subprocess.run([sys.executable, "-m", *argv]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

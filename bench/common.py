"""Shared benchmark helpers: a daemon subprocess, percentiles, a table printer."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

READY = re.compile(r"opencoded ready: (http://\S+) unix:(\S+)")


class Daemon:
    """`opencoded` as a subprocess on a temp socket and a free port."""

    def __init__(self, *args: str, config: str | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ocb", dir="/tmp"))
        self.socket = self.tmp / "d.sock"
        cfg = self.tmp / "opencode.json"
        cfg.write_text(config or "{}")
        log = open(self.tmp / "stderr.log", "wb")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opencoded", "--port", "0", "--socket", str(self.socket),
             "--data-dir", str(self.tmp / "data"), "--config", str(cfg),
             "--log-level", "warning", *args],
            stderr=log,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = READY.search((self.tmp / "stderr.log").read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError((self.tmp / "stderr.log").read_text())
            time.sleep(0.02)
        else:
            raise RuntimeError("daemon did not start")
        self.token = (self.tmp / "data" / "token").read_text().strip()

    def rss_mb(self) -> float:
        return self.status("VmRSS")

    def status(self, key: str) -> float:
        """A /proc/PID/status size in MB (VmRSS now, VmHWM peak)."""
        return proc_status_mb(self.proc.pid, key)

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon has used so far."""
        return proc_cpu_seconds(self.proc.pid)

    def unix_client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url="http://localhost", timeout=30)

    def tcp_client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, trust_env=False, timeout=30)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def proc_status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    out = [title, line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def median(values: list[float]) -> float:
    return statistics.median(values)


def env_info() -> str:
    return f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"

"""A throwaway PostgreSQL server for the tests (Debian package `postgresql`).

`initdb` refuses to run as root and CI runs as root, so the cluster belongs to the
`postgres` user the package creates. It listens only on a Unix socket in a temp dir,
with fsync off (a crash loses nothing a test cares about). One server per test session;
each test gets a fresh database, created from a template in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

REASON_MISSING = "PostgreSQL is not installed (Debian package `postgresql`; .ci/run installs it)"


def find_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args  # not root: initdb runs as whoever we are
    return ["runuser", "-u", "postgres", "--", *args]


@attrs.define
class PgServer:
    bin_dir: Path
    root: Path
    proc: subprocess.Popen | None = None
    _names: Iterator[int] = attrs.Factory(lambda: itertools.count(1))

    @property
    def socket_dir(self) -> Path:
        return self.root

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.root}"

    def start(self) -> None:
        data = self.root / "data"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_postgres(
                [str(self.bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                 "--no-sync", "-E", "UTF8", "--locale=C"]
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with open(self.root / "server.log", "wb") as log:
            self.proc = self._spawn(data, log)
        self._wait_ready()
        self.sql("CREATE DATABASE opencode_template")

    def _spawn(self, data: Path, log: Any) -> subprocess.Popen:
        return subprocess.Popen(
            _as_postgres(
                [str(self.bin_dir / "postgres"), "-D", str(data), "-k", str(self.root),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=300",
                 "-c", "shared_buffers=32MB"]
            ),
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip

    def _wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(self.log()) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # a server starting up: polled with a bound

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE opencode_template")
        return self.url(name)

    def _fast_shutdown(self) -> None:
        """SIGINT to the postmaster itself (behind runuser): PostgreSQL's "fast" shutdown
        cuts clients off; SIGTERM ("smart") would wait for every client to leave."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)

    def pause(self) -> None:
        """Stop the server, keeping its data (resume() starts it again)."""
        assert self.proc is not None
        self._fast_shutdown()
        self.proc.wait(timeout=30)

    def resume(self) -> None:
        with open(self.root / "server.log", "ab") as log:
            self.proc = self._spawn(self.root / "data", log)
        self._wait_ready()

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.proc is not None:
            self._fast_shutdown()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(REASON_MISSING)
    server = PgServer(bin_dir, Path(tempfile.mkdtemp(prefix="ocpg", dir="/tmp")))
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server

"""SQLite storage: WAL mode, one writer thread with group commit, readers in worker threads.

Why a dedicated writer thread instead of `trio.to_thread` per write: SQLite allows one
writer at a time, and a commit is the expensive part. The writer drains everything
queued while it was busy and commits it as one transaction (each job in its own
savepoint, so one failing job cannot take the others down). Under load that turns a
thousand token events into one commit; idle, a write still commits at once. Events
appended back to back travel as one job (`_EventBatch`), so the per-event cost is a row
in an executemany, not a queue round trip, a savepoint and a callback hop each.

Durability: WAL with synchronous=NORMAL. A commit reaches the OS before the caller is
told, so a crash or `kill -9` of the daemon loses nothing acknowledged; only a power
failure can lose the last transactions (no fsync per token, by design).
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from ..records import Event, Message, PermissionRequest, Project, Session, Turn
from .base import SessionSnapshot, StoreError
from .migrations import migrate

T = TypeVar("T")
_STOP = object()
_MAX_BATCH = 2000
_VACUUM_PAGES = 2048  # pages freed per transaction by vacuum()
_SESSION_COLUMNS = "id, created, updated, provider, model, project, directory, title, permission"


class _Job:
    __slots__ = ("done", "error", "fn", "result", "savepoint")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], done: Callable[[_Job], None]):
        self.fn = fn
        self.done = done
        self.result: Any = None
        self.error: BaseException | None = None
        self.savepoint = True


class QueuedWrite:
    """A write already queued to the writer; `await wait()` for its outcome."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._error: BaseException | None = None

    def _finish(self, job: _Job) -> None:
        self._error = job.error
        self._done.set()

    async def wait(self) -> None:
        """Return once committed; raise StoreError if the write failed."""
        await self._done.wait()
        if self._error is not None:
            if isinstance(self._error, StoreError):
                raise self._error
            raise StoreError(f"database write failed: {self._error}") from self._error


class _EventBatch:
    """Events appended back to back, written as one job (one executemany, no savepoint).

    A batch stays open, taking more events, until the writer starts it or any other job
    is queued behind it, so the commit order is exactly the append order. Events cannot
    fail one by one in practice (the seq is ours), so they get no savepoint each: per
    event, the cost is one row in an executemany. If the whole insert fails (e.g. a
    session deleted under a running turn), the rows are retried one by one so only the
    failing ones are lost (see _insert_events).
    """

    __slots__ = ("closed", "items", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.items: list[tuple[Event, Callable[[Event], None], Callable[[Event], None] | None]] = []
        self.closed = False


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


class SQLiteStore:
    """The default Store (see storage.base for the contract of each method)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._read_limiter = trio.CapacityLimiter(4)
        self._batch: _EventBatch | None = None  # the open event batch (Trio thread only)
        self._batch_lock = threading.Lock()  # guards _EventBatch.closed and its lists

    # ---- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> SQLiteStore:
        self._token = trio.lowlevel.current_trio_token()
        # The process's GIL switch interval is set short in server.run_daemon: the
        # writer and reader threads retake the GIL after every SQLite call.
        conn = await trio.to_thread.run_sync(self._open_writer)
        self._thread = threading.Thread(
            target=self._writer_loop, args=(conn,), name="opencoded-db-writer", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        thread, self._thread = self._thread, None
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only settable when empty
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
            migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self.path.chmod(0o600)
        return conn

    # ---- the writer ----------------------------------------------------------------

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    batch.append(job)
                self._commit(conn, batch)
                assert self._token is not None
                self._token.run_sync_soon(_deliver, batch)
                if stop:
                    return
        finally:
            # A damaged file must not turn a clean stop into a thread crash.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA optimize")
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        if len(batch) == 1 and not batch[0].savepoint:
            # A lone event batch (the common case while one turn streams) commits on its
            # own: its insert is atomic without BEGIN/COMMIT around it, and every
            # statement saved is a GIL round trip saved (see _insert_events).
            job = batch[0]
            try:
                job.result = job.fn(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                job.error = StoreError(f"database write failed: {exc}")
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if not job.savepoint:
                    try:
                        job.result = job.fn(conn)
                    except Exception as exc:
                        job.error = exc
                        raise
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(conn)
                    conn.execute("RELEASE job")
                except Exception as exc:
                    job.error = exc
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.error = StoreError(f"database write failed: {exc}")

    def _submit(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        done: Callable[[_Job], None],
        *,
        savepoint: bool = True,
    ) -> None:
        if self._thread is None:
            raise StoreError("the store is closed")
        self._batch = None  # later events must commit after this job
        job = _Job(fn, done)
        job.savepoint = savepoint
        self._queue.put(job)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        finished = trio.Event()
        holder: list[_Job] = []

        def done(job: _Job) -> None:
            holder.append(job)
            finished.set()

        self._submit(fn, done)
        await finished.wait()
        job = holder[0]
        if job.error is not None:
            if isinstance(job.error, sqlite3.Error):
                raise StoreError(str(job.error)) from job.error
            raise job.error
        return job.result

    # ---- readers -----------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc

        return await trio.to_thread.run_sync(run, limiter=self._read_limiter)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1 FROM sessions LIMIT 1").fetchall())
        if self._thread is None or not self._thread.is_alive():
            raise StoreError("the database writer is not running")

    # ---- projects ------------------------------------------------------------------

    async def create_project(self, project: Project) -> Project:
        def run(c: sqlite3.Connection) -> Project:
            _insert_project(c, project, if_new=True)
            row = c.execute("SELECT * FROM projects WHERE path = ?", (project.path,)).fetchone()
            return _project(row)

        return await self._write(run)

    async def get_project(self, project_id: str) -> Project | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
        )
        return _project(row) if row else None

    async def find_project_by_path(self, path: str) -> Project | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM projects WHERE path = ?", (path,)).fetchone()
        )
        return _project(row) if row else None

    async def list_projects(self) -> list[Project]:
        rows = await self._read(
            lambda c: c.execute("SELECT * FROM projects ORDER BY created, id").fetchall()
        )
        return [_project(r) for r in rows]

    async def delete_project(self, project_id: str) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            c.execute("UPDATE sessions SET project = NULL WHERE project = ?", (project_id,))
            return c.execute("DELETE FROM projects WHERE id = ?", (project_id,)).rowcount > 0

        return await self._write(run)

    # ---- sessions ------------------------------------------------------------------

    async def create_session(self, session: Session, new_project: Project | None = None) -> Session:
        def run(c: sqlite3.Connection) -> Session:
            stored = session
            if new_project is not None:
                # Two creates for the same new directory may race; the path decides.
                _insert_project(c, new_project, if_new=True)
                (project_id,) = c.execute(
                    "SELECT id FROM projects WHERE path = ?", (new_project.path,)
                ).fetchone()
                stored = attrs.evolve(session, project=project_id)
            c.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                _session_row(stored),
            )
            return stored

        return await self._write(run)

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        )
        return _session(row) if row else None

    async def list_sessions(
        self, *, limit: int, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        clauses, params = [], []
        if before is not None:
            clauses.append("n < (SELECT n FROM sessions WHERE id = ?)")
            params.append(before)
        if project is not None:
            clauses.append("project = ?")
            params.append(project)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions {where} ORDER BY n DESC LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [_session(r) for r in rows]

    async def update_session(self, session: Session) -> None:
        row = _session_row(session)

        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE sessions SET created=?, updated=?, provider=?, model=?, project=?,"
                " directory=?, title=?, permission=? WHERE id=?",
                (*row[1:], row[0]),
            )

        await self._write(run)

    async def delete_session(self, session_id: str) -> bool:
        return bool(await self._write(lambda c: _delete_sessions(c, [session_id])))

    async def prune_sessions(self, updated_before: int) -> list[str]:
        def run(c: sqlite3.Connection) -> list[str]:
            ids = [
                r[0]
                for r in c.execute("SELECT id FROM sessions WHERE updated < ?", (updated_before,))
            ]
            _delete_sessions(c, ids)
            return ids

        return await self._write(run)

    async def vacuum(self) -> None:
        def run() -> None:
            conn = _connect(self.path)
            try:
                # In chunks, each its own short transaction, so the writer is never
                # blocked for long. executescript, because `execute` steps the pragma
                # once, and each step frees a single page.
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                while free > 0:
                    conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES})")
                    left = conn.execute("PRAGMA freelist_count").fetchone()[0]
                    if left >= free:  # not an auto_vacuum=INCREMENTAL file
                        break
                    free = left
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

        await trio.to_thread.run_sync(run)

    # ---- events --------------------------------------------------------------------

    def append_event(
        self,
        event: Event,
        on_commit: Callable[[Event], None],
        on_lost: Callable[[Event], None] | None = None,
    ) -> None:
        row = (event.session_id, event.seq, event.type, json.dumps(event.data), event.created)
        item = (event, on_commit, on_lost)
        batch = self._batch
        if batch is not None:
            with self._batch_lock:
                if not batch.closed:
                    batch.rows.append(row)
                    batch.items.append(item)
                    return
        batch = _EventBatch()
        batch.rows.append(row)
        batch.items.append(item)
        lock = self._batch_lock

        def run(c: sqlite3.Connection) -> set[int]:
            with lock:
                batch.closed = True
            return _insert_events(c, batch.rows)

        def done(job: _Job) -> None:
            for i, (written, committed, lost) in enumerate(batch.items):
                if job.error is None and i not in job.result:
                    committed(written)
                elif lost is not None:
                    lost(written)

        self._submit(run, done, savepoint=False)
        self._batch = batch

    async def flush(self) -> None:
        await self._write(lambda c: None)

    async def read_events(self, session_id: str, after: int, limit: int = 1000) -> list[Event]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT * FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (session_id, after, limit),
            ).fetchall()
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def last_seq(self, session_id: str) -> int:
        row = await self._read(lambda c: c.execute(_LAST_SEQ_SQL, (session_id,)).fetchone())
        return row[0] or 0

    # ---- messages, turns, permissions ---------------------------------------------

    async def save_message(self, message: Message) -> None:
        await self._write(lambda c: _save_message(c, message))

    def submit_turn_start(self, message: Message, turn: Turn) -> QueuedWrite:
        """Queue a turn's user message and its Turn record as one job; do not wait.

        The caller starts the provider request while this commits: the writer's FIFO
        order already guarantees it is stored before any event appended afterwards, so
        no client can see the turn's events without it. `await pending.wait()` for the
        outcome (a failure must fail the turn).
        """
        row = _turn_row(turn)

        def run(c: sqlite3.Connection) -> None:
            _save_message(c, message)
            c.execute("REPLACE INTO turns VALUES (?,?,?,?,?,?,?,?,?)", row)

        pending = QueuedWrite()
        self._submit(run, pending._finish)
        return pending

    async def list_messages(self, session_id: str) -> list[Message]:
        rows = await self._read(lambda c: c.execute(_MESSAGES_SQL, (session_id,)).fetchall())
        return _messages(rows)

    async def save_turn(self, turn: Turn) -> None:
        row = (
            turn.id,
            turn.session_id,
            turn.message_id,
            turn.status,
            turn.started,
            turn.ended,
            turn.input_tokens,
            turn.output_tokens,
            turn.cost,
        )
        await self._write(lambda c: c.execute("REPLACE INTO turns VALUES (?,?,?,?,?,?,?,?,?)", row))

    async def get_turn(self, turn_id: str) -> Turn | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
        )
        return Turn(*row) if row else None

    async def running_turns(self) -> list[Turn]:
        rows = await self._read(
            lambda c: c.execute("SELECT * FROM turns WHERE status = 'running'").fetchall()
        )
        return [Turn(*r) for r in rows]

    async def save_permission(self, request: PermissionRequest) -> None:
        row = (
            request.id,
            request.session_id,
            request.turn_id,
            request.tool,
            json.dumps(request.args),
            request.status,
            request.created,
        )
        await self._write(
            lambda c: c.execute("REPLACE INTO permissions VALUES (?,?,?,?,?,?,?)", row)
        )

    async def get_permission(self, request_id: str) -> PermissionRequest | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM permissions WHERE id = ?", (request_id,)).fetchone()
        )
        return _permission(row) if row else None

    async def pending_permissions(self, session_id: str) -> list[PermissionRequest]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT * FROM permissions WHERE session_id = ? AND status = 'pending'"
                " ORDER BY created, rowid",
                (session_id,),
            ).fetchall()
        )
        return [_permission(r) for r in rows]

    async def expire_permissions(self, turn_ids: Sequence[str]) -> int:
        ids = list(turn_ids)

        def run(c: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(ids))
            return c.execute(
                f"UPDATE permissions SET status = 'expired'"
                f" WHERE status = 'pending' AND turn_id IN ({marks})",
                ids,
            ).rowcount

        return await self._write(run) if ids else 0

    # ---- service upkeep -------------------------------------------------------------

    async def close_turn(self, turn: Turn, events: Sequence[Event]) -> None:
        rows = [(e.session_id, e.seq, e.type, json.dumps(e.data), e.created) for e in events]

        def run(c: sqlite3.Connection) -> None:
            c.executemany("INSERT INTO events VALUES (?,?,?,?,?)", rows)
            c.execute("REPLACE INTO turns VALUES (?,?,?,?,?,?,?,?,?)", _turn_row(turn))

        await self._write(run)

    async def prune_idle_sessions(self, updated_before: int, keep: Sequence[str]) -> list[str]:
        kept = set(keep)

        def run(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT id FROM sessions WHERE updated < ?", (updated_before,))
            ids = [r[0] for r in rows if r[0] not in kept]
            _delete_sessions(c, ids)
            return ids

        return await self._write(run)

    async def stale_sessions(self, updated_before: int) -> list[str]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id FROM sessions WHERE updated < ? ORDER BY updated", (updated_before,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def session_snapshot(
        self, session_id: str, *, with_last_seq: bool
    ) -> SessionSnapshot | None:
        def run(c: sqlite3.Connection) -> SessionSnapshot | None:
            row = c.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            rows = c.execute(_MESSAGES_SQL, (session_id,)).fetchall()
            last_seq = None
            if with_last_seq:
                last_seq = c.execute(_LAST_SEQ_SQL, (session_id,)).fetchone()[0] or 0
            return SessionSnapshot(_session(row), _messages(rows), last_seq)

        return await self._read(run)

    # ---- the task list (todo tools) ------------------------------------------------

    async def last_event(self, session_id: str, type: str) -> Event | None:
        # Walks the session's events backwards on the primary key: a task list is
        # written often, so the match is near the end.
        row = await self._read(
            lambda c: c.execute(
                "SELECT * FROM events WHERE session_id = ? AND type = ? ORDER BY seq DESC LIMIT 1",
                (session_id, type),
            ).fetchone()
        )
        return Event(row[0], row[1], row[2], json.loads(row[3]), row[4]) if row else None


_INSERT_EVENT = "INSERT INTO events VALUES (?,?,?,?,?)"
_ROWS_PER_INSERT = 500  # 5 parameters a row, well under SQLite's 32766 limit
_LAST_SEQ_SQL = "SELECT max(seq) FROM events WHERE session_id = ?"
_MESSAGES_SQL = (
    "SELECT id, session_id, turn_id, role, parts, created FROM messages"
    " WHERE session_id = ? ORDER BY ord"
)


def _messages(rows: list[tuple]) -> list[Message]:
    return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]


def _insert_events(c: sqlite3.Connection, rows: list[tuple]) -> set[int]:
    """Insert event rows; return the indexes of those that could not be stored.

    One multi-row INSERT per 500 rows rather than `executemany`: the sqlite3 module
    releases and retakes the GIL around every statement step, and while the Trio thread
    is busy each retake can wait a whole switch interval, so a step per row made a
    batch of a hundred events cost a hundred waits.
    """
    if not c.in_transaction and len(rows) <= _ROWS_PER_INSERT:
        # Autocommit (the writer's lone-batch path): one statement, atomic by itself.
        try:
            c.execute(f"INSERT INTO events VALUES {_marks(len(rows))}", _flat(rows))
            return set()
        except sqlite3.Error:
            return _insert_one_by_one(c, rows)
    c.execute("SAVEPOINT events")
    try:
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            part = rows[start : start + _ROWS_PER_INSERT]
            c.execute(f"INSERT INTO events VALUES {_marks(len(part))}", _flat(part))
    except sqlite3.Error:
        c.execute("ROLLBACK TO events")
        return _insert_one_by_one(c, rows)
    finally:
        c.execute("RELEASE events")
    return set()


def _insert_one_by_one(c: sqlite3.Connection, rows: list[tuple]) -> set[int]:
    failed = set()
    for i, row in enumerate(rows):
        try:
            c.execute(_INSERT_EVENT, row)  # one statement is atomic by itself
        except sqlite3.Error:
            failed.add(i)
    return failed


@functools.lru_cache(maxsize=64)
def _marks(n: int) -> str:
    return ",".join(["(?,?,?,?,?)"] * n)


def _flat(rows: list[tuple]) -> list[Any]:
    return [v for row in rows for v in row]


def _save_message(c: sqlite3.Connection, message: Message) -> None:
    c.execute(
        "INSERT INTO messages (id, session_id, turn_id, role, parts, created, ord)"
        " VALUES (?,?,?,?,?,?, (SELECT coalesce(max(ord), 0) + 1 FROM messages))"
        " ON CONFLICT(id) DO UPDATE SET parts = excluded.parts",
        (
            message.id,
            message.session_id,
            message.turn_id,
            message.role,
            json.dumps(message.parts),
            message.created,
        ),
    )
    c.execute(
        "UPDATE sessions SET updated = max(updated, ?) WHERE id = ?",
        (message.created, message.session_id),
    )


def _deliver(batch: list[_Job]) -> None:
    """Runs on the Trio thread: tell every waiter of a committed batch, in order."""
    for job in batch:
        job.done(job)


def _insert_project(c: sqlite3.Connection, p: Project, *, if_new: bool = False) -> None:
    conflict = " ON CONFLICT(path) DO NOTHING" if if_new else ""
    c.execute(f"INSERT INTO projects VALUES (?,?,?,?){conflict}", (p.id, p.name, p.path, p.created))


def _project(row: tuple) -> Project:
    return Project(*row)


def _session_row(s: Session) -> tuple:
    return (
        s.id,
        s.created,
        s.updated,
        s.provider,
        s.model,
        s.project,
        s.directory,
        s.title,
        json.dumps(s.permission),
    )


def _session(row: tuple) -> Session:
    return Session(*row[:8], permission=json.loads(row[8]))


def _permission(row: tuple) -> PermissionRequest:
    return PermissionRequest(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])


def _delete_sessions(c: sqlite3.Connection, ids: list[str]) -> int:
    deleted = 0
    for session_id in ids:
        for table in ("events", "messages", "turns", "permissions"):
            c.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
        deleted += c.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount
    return deleted


def _turn_row(t: Turn) -> tuple:
    return (
        t.id,
        t.session_id,
        t.message_id,
        t.status,
        t.started,
        t.ended,
        t.input_tokens,
        t.output_tokens,
        t.cost,
    )

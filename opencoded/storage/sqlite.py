"""The SQLite backend: WAL mode, one writer connection, a fixed pool of readers.

Writes: `apply` runs a group of operations (storage.ops) as one transaction on the one
writer connection, in a worker thread, one group at a time (a single-token limiter: SQLite
allows one writer). Group commit itself happens above, in storage.store.

Reads: a fixed pool of read-only connections, opened at start and closed at stop, each
used by one worker thread at a time. (A connection per worker thread leaked: Trio retires
idle threads, and their connections were never closed.)

Durability: WAL with synchronous=NORMAL. A commit reaches the OS before the caller is
told, so a crash or `kill -9` of the daemon loses nothing acknowledged; only a power
failure can lose the last transactions (no fsync per token, by design).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from ..records import Event, Message, PermissionRequest, Project, Session, Turn
from . import ops
from .base import MessagesHead, SessionSnapshot, StoreConflict, StoreError
from .migrations import migrate
from .rows import messages as _messages
from .rows import permission as _permission
from .rows import session as _session
from .rows import session_row as _session_row
from .rows import turn_row as _turn_row
from .store import Store, open_store

T = TypeVar("T")
log = logging.getLogger(__name__)
READERS = 4
_VACUUM_PAGES = 2048  # pages freed per transaction by vacuum()
_SESSION_COLUMNS = "id, created, updated, provider, model, project, directory, title, permission"
_TURN_COLUMNS = (
    "id, session_id, message_id, status, started, ended, input_tokens, output_tokens, cost, alive"
)


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


class _ReaderPool:
    """READERS connections; a read borrows one for the length of its worker thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._free: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._limiter = trio.CapacityLimiter(READERS)

    def open(self) -> None:
        for _ in range(READERS):
            conn = _connect(self._path, readonly=True)
            self._all.append(conn)
            self._free.append(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._free.clear()

    @property
    def size(self) -> int:
        return len(self._all)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._limiter:
            conn = self._free.pop()
            try:
                return await trio.to_thread.run_sync(_guarded, fn, conn)
            finally:
                self._free.append(conn)


def _guarded(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    try:
        return fn(conn)
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc


class SQLiteBackend:
    """The default Backend (see storage.base for the contract of each method)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._write_limiter = trio.CapacityLimiter(1)
        self._readers = _ReaderPool(path)

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        self._writer = await trio.to_thread.run_sync(self._open_writer)
        await trio.to_thread.run_sync(self._readers.open)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        try:
            self._write_limiter.acquire_nowait()
        except trio.WouldBlock:
            # A write still runs in its thread, abandoned by a shutdown out of time (a
            # stuck disk, a lock held by another process). A connection in use cannot be
            # closed; it goes with the process, its transaction uncommitted, as in a crash.
            log.error("storage: a database write was still running at exit; abandoned")
        else:
            try:
                if writer is not None:
                    await trio.to_thread.run_sync(_close_writer, writer)
            finally:
                self._write_limiter.release()
        self._readers.close()

    @property
    def open_connections(self) -> int:
        return self._readers.size + (self._writer is not None)

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only settable when empty
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
            migrate(conn)
            self.path.chmod(0o600)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        except OSError as exc:  # e.g. `chattr +i`: SQLite opened it, but it cannot be ours
            conn.close()
            raise StoreError(f"cannot open database {self.path}: {exc.strerror}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    # ---- writes ----------------------------------------------------------------------

    async def apply(self, work: Sequence[ops.WriteOp]) -> list[Any]:
        # abandon_on_cancel: only a shutdown out of time cancels the writer. The limiter
        # stays taken until the thread really ends, which is how close() knows not to
        # close a connection still in use.
        conn = self._writer
        if conn is None:
            raise StoreError("the store is closed")
        return await trio.to_thread.run_sync(
            _apply_all, conn, list(work), limiter=self._write_limiter, abandon_on_cancel=True
        )

    # ---- reads -----------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._readers.run(fn)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1 FROM sessions LIMIT 1").fetchall())

    async def get_project(self, project_id: str) -> Project | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
        )
        return Project(*row) if row else None

    async def find_project_by_path(self, path: str) -> Project | None:
        row = await self._read(
            lambda c: c.execute("SELECT * FROM projects WHERE path = ?", (path,)).fetchone()
        )
        return Project(*row) if row else None

    async def list_projects(self) -> list[Project]:
        rows = await self._read(
            lambda c: c.execute("SELECT * FROM projects ORDER BY created, id").fetchall()
        )
        return [Project(*r) for r in rows]

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._read(lambda c: c.execute(_SESSION_SQL, (session_id,)).fetchone())
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

    async def stale_sessions(self, updated_before: int) -> list[str]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id FROM sessions WHERE updated < ? ORDER BY updated", (updated_before,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def session_snapshot(
        self, session_id: str, *, with_last_seq: bool, known: MessagesHead | None = None
    ) -> SessionSnapshot | None:
        def run(c: sqlite3.Connection) -> SessionSnapshot | None:
            row = c.execute(_SESSION_SQL, (session_id,)).fetchone()
            if row is None:
                return None
            messages = None
            if known is None or tuple(c.execute(_HEAD_SQL, (session_id,) * 2).fetchone()) != known:
                messages = _messages(c.execute(_MESSAGES_SQL, (session_id,)).fetchall())
            last_seq = None
            if with_last_seq:
                last_seq = c.execute(_LAST_SEQ_SQL, (session_id,)).fetchone()[0] or 0
            return SessionSnapshot(_session(row), messages, last_seq)

        return await self._read(run)

    async def read_events(self, session_id: str, after: int, limit: int = 1000) -> list[Event]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT * FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (session_id, after, limit),
            ).fetchall()
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def last_seq(self, session_id: str) -> int | None:
        row = await self._read(
            lambda c: c.execute(_SESSION_LAST_SEQ_SQL, (session_id, session_id)).fetchone()
        )
        return None if row[0] is None else row[1] or 0

    async def list_messages(self, session_id: str) -> list[Message]:
        rows = await self._read(lambda c: c.execute(_MESSAGES_SQL, (session_id,)).fetchall())
        return _messages(rows)

    async def get_turn(self, turn_id: str) -> Turn | None:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?", (turn_id,)
            ).fetchone()
        )
        return Turn(*row) if row else None

    async def running_turns(self) -> list[Turn]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE status = 'running'"
            ).fetchall()
        )
        return [Turn(*r) for r in rows]

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
            except sqlite3.Error as exc:
                raise StoreError(f"vacuum failed: {exc}") from exc
            finally:
                conn.close()

        # Abandoned if cancelled (a shutdown): a chunk runs to its end in its thread, on
        # its own connection, and the process goes on without waiting for the rest.
        await trio.to_thread.run_sync(run, abandon_on_cancel=True)

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


@asynccontextmanager
async def SQLiteStore(path: Path) -> AsyncIterator[Store]:
    """A Store on the SQLite file at `path` (the daemon's default)."""
    async with open_store(SQLiteBackend(path)) as store:
        yield store


def _close_writer(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # a damaged file must not fail a clean stop
        conn.execute("PRAGMA optimize")
    conn.close()


# ---- applying a group of writes (in the writer's thread) -----------------------------


def _apply_all(conn: sqlite3.Connection, work: list[ops.WriteOp]) -> list[Any]:
    """One transaction; each op in its own savepoint, so one failing op fails alone."""
    if len(work) == 1 and isinstance(work[0], ops.InsertEvents):
        # A lone event batch (the common case while one turn streams) is atomic without
        # BEGIN/COMMIT around it, and every statement saved is a GIL round trip saved.
        return [_insert_events(conn, work[0])]
    results: list[Any] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for op in work:
            if isinstance(op, ops.InsertEvents):  # atomic per row already
                results.append(_insert_events(conn, op))
                continue
            conn.execute("SAVEPOINT op")
            try:
                results.append(_HANDLERS[type(op)](conn, op))
                conn.execute("RELEASE op")
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back (disk full, I/O)
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append(_error(exc))
        if not conn.in_transaction:
            raise StoreError("the database rolled the transaction back")
        conn.execute("COMMIT")
    except (sqlite3.Error, StoreError) as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"database write failed: {exc}") from exc
    except Exception as exc:  # a bug in a handler that escaped its savepoint
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(f"database write failed: {type(exc).__name__}: {exc}") from exc
    return results


def _error(exc: Exception) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(f"refused by the database: {exc}")
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"database write failed: {exc}")
    return StoreError(f"database write failed: {type(exc).__name__}: {exc}")


def _create_project(c: sqlite3.Connection, op: ops.CreateProject) -> Project:
    _insert_project(c, op.project)
    row = c.execute("SELECT * FROM projects WHERE path = ?", (op.project.path,)).fetchone()
    return Project(*row)


def _delete_project(c: sqlite3.Connection, op: ops.DeleteProject) -> bool:
    c.execute("UPDATE sessions SET project = NULL WHERE project = ?", (op.project_id,))
    return c.execute("DELETE FROM projects WHERE id = ?", (op.project_id,)).rowcount > 0


def _create_session(c: sqlite3.Connection, op: ops.CreateSession) -> Session:
    stored = op.session
    if op.new_project is not None:
        # Two creates for the same new directory may race; the path decides.
        _insert_project(c, op.new_project)
        (project_id,) = c.execute(
            "SELECT id FROM projects WHERE path = ?", (op.new_project.path,)
        ).fetchone()
        stored = attrs.evolve(stored, project=project_id)
    c.execute(
        f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
        _session_row(stored),
    )
    return stored


def _update_session(c: sqlite3.Connection, op: ops.UpdateSession) -> None:
    row = _session_row(op.session)
    c.execute(
        "UPDATE sessions SET created=?, updated=?, provider=?, model=?, project=?,"
        " directory=?, title=?, permission=? WHERE id=?",
        (*row[1:], row[0]),
    )


def _delete_sessions(c: sqlite3.Connection, op: ops.DeleteSessions) -> list[str]:
    """Everything a session owns goes with it (ON DELETE CASCADE)."""
    deleted = []
    sql, extra = "DELETE FROM sessions WHERE id = ?", ()
    if op.updated_before is not None:
        sql, extra = sql + " AND updated < ?", (op.updated_before,)
    for session_id in op.ids:
        if c.execute(sql, (session_id, *extra)).rowcount:
            deleted.append(session_id)
    return deleted


def _save_message(c: sqlite3.Connection, op: ops.SaveMessage) -> None:
    message = op.message
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


def _start_turn(c: sqlite3.Connection, op: ops.StartTurn) -> None:
    _save_message(c, ops.SaveMessage(op.message))
    _save_turn(c, ops.SaveTurn(op.turn))


def _save_turn(c: sqlite3.Connection, op: ops.SaveTurn) -> None:
    c.execute(
        f"REPLACE INTO turns ({_TURN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _turn_row(op.turn)
    )


def _close_turn(c: sqlite3.Connection, op: ops.CloseTurn) -> None:
    if op.message is not None:
        _save_message(c, ops.SaveMessage(op.message))
    _expire_permissions(c, ops.ExpirePermissions([op.turn.id]))
    c.executemany(_INSERT_EVENT, [_event_row(e) for e in op.events])
    _save_turn(c, ops.SaveTurn(op.turn))


def _touch_turns(c: sqlite3.Connection, op: ops.TouchTurns) -> None:
    c.executemany(
        "UPDATE turns SET alive = ? WHERE id = ? AND status = 'running'",
        [(op.at, turn_id) for turn_id in op.turn_ids],
    )


def _save_permission(c: sqlite3.Connection, op: ops.SavePermission) -> None:
    r = op.request
    row = (r.id, r.session_id, r.turn_id, r.tool, json.dumps(r.args), r.status, r.created)
    c.execute("REPLACE INTO permissions VALUES (?,?,?,?,?,?,?)", row)


def _expire_permissions(c: sqlite3.Connection, op: ops.ExpirePermissions) -> int:
    ids = list(op.turn_ids)
    marks = ",".join("?" * len(ids))
    return c.execute(
        f"UPDATE permissions SET status = 'expired'"
        f" WHERE status = 'pending' AND turn_id IN ({marks})",
        ids,
    ).rowcount


def _flush(c: sqlite3.Connection, op: ops.Flush) -> None:
    pass


_HANDLERS: dict[type, Callable[[sqlite3.Connection, Any], Any]] = {
    ops.CreateProject: _create_project,
    ops.DeleteProject: _delete_project,
    ops.CreateSession: _create_session,
    ops.UpdateSession: _update_session,
    ops.DeleteSessions: _delete_sessions,
    ops.SaveMessage: _save_message,
    ops.StartTurn: _start_turn,
    ops.SaveTurn: _save_turn,
    ops.CloseTurn: _close_turn,
    ops.TouchTurns: _touch_turns,
    ops.SavePermission: _save_permission,
    ops.ExpirePermissions: _expire_permissions,
    ops.Flush: _flush,
}


# What one bad row can raise: a constraint (its session is gone), a value SQLite cannot
# bind. Anything else is the database failing, not the row.
_ROW_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
    ValueError,
)
_INSERT_EVENT = "INSERT INTO events VALUES (?,?,?,?,?)"
_ROWS_PER_INSERT = 500  # 5 parameters a row, well under SQLite's 32766 limit
_REPLACE_TURN = f"REPLACE INTO turns ({_TURN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
_LAST_SEQ_SQL = "SELECT max(seq) FROM events WHERE session_id = ?"
_SESSION_LAST_SEQ_SQL = (
    "SELECT (SELECT 1 FROM sessions WHERE id = ?),"
    " (SELECT max(seq) FROM events WHERE session_id = ?)"
)
_SESSION_SQL = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?"
_HEAD_SQL = (
    "SELECT count(*), (SELECT id FROM messages WHERE session_id = ? ORDER BY ord DESC LIMIT 1)"
    " FROM messages WHERE session_id = ?"
)
_MESSAGES_SQL = (
    "SELECT id, session_id, turn_id, role, parts, created FROM messages"
    " WHERE session_id = ? ORDER BY ord"
)


def _insert_events(c: sqlite3.Connection, op: ops.InsertEvents) -> set[int] | StoreError:
    """Insert the events; return the indexes of those that could not be stored.

    One multi-row INSERT per 500 rows rather than `executemany`: the sqlite3 module
    releases and retakes the GIL around every statement step, and while the Trio thread
    is busy each retake can wait a whole switch interval, so a step per row made a
    batch of a hundred events cost a hundred waits. If the insert fails (e.g. a session
    deleted under a running turn), the rows are retried one by one so only the failing
    ones are lost.
    """
    try:
        rows = [_event_row(e) for e in op.events]
    except Exception as exc:  # an unserialisable event: all of them are lost, not the writer
        return _error(exc)
    inside = c.in_transaction
    savepoint = False
    try:
        if not inside and len(rows) <= _ROWS_PER_INSERT:
            try:
                c.execute(f"INSERT INTO events VALUES {_marks(len(rows))}", _flat(rows))
                return set()
            except _ROW_ERRORS:
                return _insert_one_by_one(c, rows)
        c.execute("SAVEPOINT events")
        savepoint = True
        try:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[start : start + _ROWS_PER_INSERT]
                c.execute(f"INSERT INTO events VALUES {_marks(len(part))}", _flat(part))
        except _ROW_ERRORS:
            c.execute("ROLLBACK TO events")
            return _insert_one_by_one(c, rows)
        return set()
    except sqlite3.Error as exc:
        # The database failed (disk full, I/O error), not one row: the op fails as a
        # whole, as a database failure (health reports it).
        if inside and not c.in_transaction:
            raise  # SQLite rolled the whole transaction back: the group fails
        if savepoint:
            c.execute("ROLLBACK TO events")
        return _error(exc)
    finally:
        if savepoint and c.in_transaction:
            c.execute("RELEASE events")


def _insert_one_by_one(c: sqlite3.Connection, rows: list[tuple]) -> set[int]:
    failed = set()
    for i, row in enumerate(rows):
        try:
            c.execute(_INSERT_EVENT, row)  # one statement is atomic by itself
        except _ROW_ERRORS:
            failed.add(i)
    return failed


@functools.lru_cache(maxsize=64)
def _marks(n: int) -> str:
    return ",".join(["(?,?,?,?,?)"] * n)


def _flat(rows: list[tuple]) -> list[Any]:
    return [v for row in rows for v in row]


def _event_row(e: Event) -> tuple:
    return (e.session_id, e.seq, e.type, json.dumps(e.data), e.created)


def _insert_project(c: sqlite3.Connection, p: Project) -> None:
    c.execute(
        "INSERT INTO projects VALUES (?,?,?,?) ON CONFLICT(path) DO NOTHING",
        (p.id, p.name, p.path, p.created),
    )

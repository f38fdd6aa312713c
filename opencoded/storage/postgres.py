"""The PostgreSQL backend: sync psycopg 3 and a psycopg_pool pool, in worker threads.

Why threads: psycopg's async API is asyncio-only (under `trio.run` it fails with "no
running event loop") and no maintained Trio-native driver exists, so this is the same
shape as the SQLite backend: blocking calls in `trio.to_thread`. A Trio cancel cannot
interrupt a query running in a thread, so every connection has a `statement_timeout`
and the pool a bounded wait: nothing can hold a worker thread for ever.

Semantics are the SQLite backend's, op by op (see storage.sqlite and storage.base):
`apply` runs a group of writes in one transaction, each op in its own savepoint; event
inserts return the indexes of the rows that could not be stored; everything a session
owns goes with it (ON DELETE CASCADE). Schema versions: storage.pg_migrations, applied
at open under an advisory lock, so instances starting together do not race.

Durability: a commit returns once PostgreSQL has it (its own `synchronous_commit`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import psycopg
import psycopg_pool
import trio

from ..records import Event, Message, PermissionRequest, Project, Session, Turn, new_id
from . import ops
from .base import MessagesHead, SessionSnapshot, StoreConflict, StoreError
from .pg_migrations import migrate
from .rows import messages as _messages
from .rows import permission as _permission
from .rows import session as _session
from .rows import session_row as _session_row
from .rows import turn_row as _turn_row
from .store import Store, open_store

T = TypeVar("T")
log = logging.getLogger(__name__)

POOL_SIZE = 8  # connections: reads run in parallel, writes take one at a time
STATEMENT_TIMEOUT_MS = 30_000  # a thread stuck in a query cannot be cancelled by Trio
# Our transactions never wait for anything but our own next statement: one left open by
# a frozen instance (SIGSTOP, a paused VM) is ended by the server instead of holding its
# row locks against the instance that declares it dead.
IDLE_IN_TRANSACTION_MS = 5_000
CONNECT_TIMEOUT = 10  # seconds, per connection attempt
# Seconds a call may wait for a connection. Reads never wait for a free one (a limiter
# keeps them to POOL_SIZE, the writer has one more), so this is how long PostgreSQL may
# be unreachable before a request fails with a clear error (health: 503).
POOL_WAIT = 3.0
OPEN_WAIT = 15.0  # seconds the first connections may take at start
LEASE_SECONDS = 10.0  # a running turn's lease; renewed by the alive marks (every 2 s)
EVENTS_CHANNEL = "opencode_events"  # NOTIFY payload: "<instance> <session id> <seq>"
LISTEN_POLL = 0.5  # seconds between the listener thread's checks for a stop
RELISTEN_DELAY = 1.0  # seconds between attempts to reconnect the listener

CONTROL_CHANNEL = "opencode_control"  # NOTIFY payload: "<kind> <session id> <argument>"

RemoteEvents = Callable[[str | None, int], None]
RemoteControl = Callable[[str, str, str], None]

_SESSION_COLUMNS = "id, created, updated, provider, model, project, directory, title, permission"
_TURN_COLUMNS = (
    "id, session_id, message_id, status, started, ended, input_tokens, output_tokens, cost, alive"
)
_EVENT_COLUMNS = "session_id, seq, type, data, created"


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://…"
    host = info.get("host", "")
    return f"postgresql://{info.get('user', '')}@{host}/{info.get('dbname', '')}"


class PostgresBackend:
    """A Backend (see storage.base) on one PostgreSQL database, shared by instances.

    Beyond the Backend protocol, what several instances need (docs/scaling.md): each
    commit notifies the other instances of the events it stored (`listen_events`), a
    running turn holds a lease on its session (`claim_turn`, renewed by the alive marks,
    released with the turn's end), `running_turns` only lists turns nobody holds a lease
    on (so an instance recovers a dead one's turns, never a live one's), and the API
    token is the cluster's (`shared_token`).
    """

    shared = True  # several instances use one database

    def __init__(self, url: str, *, instance: str | None = None, pool_size: int = POOL_SIZE):
        self.url = url
        # Who holds leases and sends notifications: stable per data dir (see server.py),
        # so a restarted instance knows the leases of its dead predecessor.
        self.instance = instance or new_id("inst")
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._pool_size = pool_size
        self._limiter = trio.CapacityLimiter(pool_size)  # threads never wait in the pool
        self._write_limiter = trio.CapacityLimiter(1)

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        where = redact(self.url)
        try:
            with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT) as conn:
                migrate(conn)
                # Our leases are a previous run's (one process per data dir): its turns
                # are recovered at once, as after a crash with SQLite.
                conn.execute("DELETE FROM turn_leases WHERE instance = %s", (self.instance,))
                conn.commit()
        except psycopg.Error as exc:
            raise StoreError(f"cannot open database {where}: {_one_line(exc)}") from None
        pool = psycopg_pool.ConnectionPool(
            self.url,
            min_size=2,
            max_size=self._pool_size + 1,  # + the writer's
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT,
                "options": (
                    f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
                    f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
                ),
                "application_name": "opencoded",
            },
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=POOL_WAIT,
            reconnect_timeout=0,  # keep trying for ever: PostgreSQL may come back
            open=False,
            name="opencoded",
        )
        try:
            pool.open(wait=True, timeout=OPEN_WAIT)
        except psycopg_pool.PoolTimeout:
            pool.close()
            raise StoreError(f"cannot open database {where}: no connection in time") from None
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # A query still running in an abandoned thread ends by its statement_timeout.
            await trio.to_thread.run_sync(lambda: pool.close(timeout=2.0))

    # ---- running calls in threads ------------------------------------------------------

    def _conn(self) -> Any:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is closed")
        return pool.connection()

    def _run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        try:
            with self._conn() as conn:
                return fn(conn)
        except psycopg_pool.PoolTimeout:
            raise StoreError("database unavailable: no connection to PostgreSQL") from None
        except psycopg.Error as exc:
            raise StoreError(f"database error: {_one_line(exc)}") from exc

    async def _read(self, fn: Callable[[psycopg.Connection], T]) -> T:
        return await trio.to_thread.run_sync(self._run, fn, limiter=self._limiter)

    async def _one(self, sql: str, params: Sequence[Any]) -> tuple | None:
        return await self._read(lambda c: c.execute(sql, params).fetchone())

    async def _all(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        return await self._read(lambda c: c.execute(sql, params).fetchall())

    # ---- writes ----------------------------------------------------------------------

    async def apply(self, work: Sequence[ops.WriteOp]) -> list[Any]:
        work = list(work)
        # Like SQLite's writer: only a shutdown out of time cancels it; the transaction
        # then ends with the connection (statement_timeout bounds what is running).
        async with self._write_limiter:
            return await trio.to_thread.run_sync(
                self._run, lambda c: _apply_all(c, work, self.instance), abandon_on_cancel=True
            )

    # ---- the cluster -------------------------------------------------------------------

    async def claim_turn(self, session_id: str, turn_id: str) -> bool:
        """Take the session's turn lease for `turn_id`; False if a turn runs anywhere
        (or one of a dead instance still waits to be recovered)."""

        def run(c: psycopg.Connection) -> bool:
            with c.transaction():
                if c.execute(_RUNNING_IN_SESSION, (session_id,)).fetchone():
                    return False
                row = c.execute(
                    _CLAIM_LEASE, (session_id, turn_id, self.instance, LEASE_SECONDS)
                ).fetchone()
                if row is not None:
                    _notify_control(c, "busy", session_id, self.instance)
                return row is not None

        return await self._read(run)

    async def claim_periodic(self, task: str, every: float) -> bool:
        """Whether this instance runs `task` now: True for one instance per `every`
        seconds across the cluster (retention runs once per cluster, not per instance)."""

        def run(c: psycopg.Connection) -> bool:
            with c.transaction():
                row = c.execute(_CLAIM_PERIODIC, {"key": f"ran:{task}", "every": every}).fetchone()
            return row is not None

        return await self._read(run)

    async def shared_token(self, candidate: str) -> str:
        """The cluster's API token: `candidate` if no instance stored one before."""

        def run(c: psycopg.Connection) -> str:
            with c.transaction():
                c.execute(
                    "INSERT INTO cluster VALUES ('token', %s) ON CONFLICT DO NOTHING", (candidate,)
                )
                row = c.execute("SELECT value FROM cluster WHERE key = 'token'").fetchone()
            assert row is not None
            return row[0]

        return await self._read(run)

    async def request_abort(self, session_id: str) -> bool:
        """Ask the instance running the session's turn to abort it (a durable flag its
        alive marks read back, and a notification); False if no turn runs anywhere."""

        def run(c: psycopg.Connection) -> bool:
            with c.transaction():
                row = c.execute(
                    "UPDATE turn_leases SET abort = true WHERE session_id = %s"
                    " AND expires > now() RETURNING instance",
                    (session_id,),
                ).fetchone()
                if row is not None:
                    _notify_control(c, "abort", session_id, row[0])
            return row is not None

        return await self._read(run)

    async def busy_sessions(self) -> set[str]:
        """The sessions with a turn running (a live lease) on another instance."""
        rows = await self._all(
            "SELECT session_id FROM turn_leases WHERE expires > now() AND instance <> %s",
            (self.instance,),
        )
        return {r[0] for r in rows}

    async def lease_held(self, session_id: str) -> bool:
        """Whether a turn of the session runs (holds a live lease) anywhere."""
        row = await self._one(
            "SELECT 1 FROM turn_leases WHERE session_id = %s AND expires > now()", (session_id,)
        )
        return row is not None

    async def answer_remote(self, session_id: str, permission_id: str, response: str) -> bool:
        """Store the answer to a pending request of a turn running on another instance
        and tell that instance; False if there is no such request waiting anywhere."""

        def run(c: psycopg.Connection) -> bool:
            with c.transaction():
                row = c.execute(_ANSWER_REMOTE, (response, permission_id, session_id)).fetchone()
                if row is not None:
                    _notify_control(c, "permission", session_id, permission_id)
            return row is not None

        return await self._read(run)

    async def listen_events(
        self, deliver: RemoteEvents, control: RemoteControl | None = None
    ) -> None:
        """Until cancelled: `deliver(session_id, seq)` on the Trio thread for events other
        instances committed, `control(kind, session_id, argument)` for what they ask of
        this one; `deliver(None, 0)` after each (re)connection, since the notifications
        sent while no one listened are lost (catch up from the tables)."""
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()
        try:
            await trio.to_thread.run_sync(
                self._listen, deliver, control, token, stop, abandon_on_cancel=True
            )
        finally:
            stop.set()  # the thread sees it within LISTEN_POLL and closes its connection

    def _listen(
        self,
        deliver: RemoteEvents,
        control: RemoteControl | None,
        token: trio.lowlevel.TrioToken,
        stop: threading.Event,
    ) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}; LISTEN {CONTROL_CHANNEL}")
                    trio.from_thread.run_sync(deliver, None, 0, trio_token=token)
                    while not stop.is_set():
                        for note in conn.notifies(timeout=LISTEN_POLL):
                            first, session_id, last = note.payload.split(" ")
                            if note.channel == EVENTS_CHANNEL and first != self.instance:
                                trio.from_thread.run_sync(
                                    deliver, session_id, int(last), trio_token=token
                                )
                            elif note.channel == CONTROL_CHANNEL and control is not None:
                                if first in ("busy", "idle") and last == self.instance:
                                    continue  # our own turn: known here already
                                trio.from_thread.run_sync(
                                    control, first, session_id, last, trio_token=token
                                )
            except trio.RunFinishedError:
                return
            except psycopg.Error as exc:
                if not stop.is_set():
                    log.warning("storage: event listener lost PostgreSQL: %s", _one_line(exc))
                    stop.wait(RELISTEN_DELAY)

    # ---- reads -----------------------------------------------------------------------

    async def ping(self) -> None:
        await self._one("SELECT 1", ())

    async def probe_write(self) -> None:
        """Raise StoreError unless a write commits (after a failed one: see Store.ping)."""

        def run(c: psycopg.Connection) -> None:
            with c.transaction():
                c.execute("UPDATE cluster SET value = value WHERE key = 'token'")

        await self._read(run)

    async def get_project(self, project_id: str) -> Project | None:
        row = await self._one(f"{_PROJECT_SQL} WHERE id = %s", (project_id,))
        return Project(*row) if row else None

    async def find_project_by_path(self, path: str) -> Project | None:
        row = await self._one(f"{_PROJECT_SQL} WHERE path = %s", (path,))
        return Project(*row) if row else None

    async def list_projects(self) -> list[Project]:
        rows = await self._all(f"{_PROJECT_SQL} ORDER BY created, id", ())
        return [Project(*r) for r in rows]

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._one(_SESSION_SQL, (session_id,))
        return _session(row) if row else None

    async def list_sessions(
        self, *, limit: int, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        clauses: list[str] = []
        params: list[Any] = []
        if before is not None:
            clauses.append("n < (SELECT n FROM sessions WHERE id = %s)")
            params.append(before)
        if project is not None:
            clauses.append("project = %s")
            params.append(project)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions {where} ORDER BY n DESC LIMIT %s"
        return [_session(r) for r in await self._all(sql, (*params, limit))]

    async def stale_sessions(self, updated_before: int) -> list[str]:
        rows = await self._all(
            "SELECT id FROM sessions WHERE updated < %s ORDER BY updated", (updated_before,)
        )
        return [r[0] for r in rows]

    async def session_snapshot(
        self, session_id: str, *, with_last_seq: bool, known: MessagesHead | None = None
    ) -> SessionSnapshot | None:
        def run(c: psycopg.Connection) -> SessionSnapshot | None:
            with c.transaction():  # one consistent view of the three reads
                row = c.execute(_SESSION_SQL, (session_id,)).fetchone()
                if row is None:
                    return None
                messages = None
                head = None if known is None else c.execute(_HEAD_SQL, (session_id,) * 2).fetchone()
                if head is None or tuple(head) != known:
                    messages = _messages(c.execute(_MESSAGES_SQL, (session_id,)).fetchall())
                last_seq = None
                if with_last_seq:
                    last_seq = c.execute(_LAST_SEQ_SQL, (session_id,)).fetchone()[0] or 0
            return SessionSnapshot(_session(row), messages, last_seq)

        return await self._read(run)

    async def read_events(self, session_id: str, after: int, limit: int = 1000) -> list[Event]:
        rows = await self._all(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = %s AND seq > %s"
            " ORDER BY seq LIMIT %s",
            (session_id, after, limit),
        )
        return [_event(r) for r in rows]

    async def last_seq(self, session_id: str) -> int | None:
        row = await self._one(_SESSION_LAST_SEQ_SQL, (session_id, session_id))
        assert row is not None
        return None if row[0] is None else row[1] or 0

    async def list_messages(self, session_id: str) -> list[Message]:
        return _messages(await self._all(_MESSAGES_SQL, (session_id,)))

    async def get_turn(self, turn_id: str) -> Turn | None:
        row = await self._one(f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = %s", (turn_id,))
        return Turn(*row) if row else None

    async def running_turns(self) -> list[Turn]:
        """The running turns no live instance holds a lease on (recovery's list)."""
        rows = await self._all(
            f"SELECT {_TURN_COLUMNS} FROM turns t WHERE status = 'running' AND NOT EXISTS"
            " (SELECT 1 FROM turn_leases l WHERE l.turn_id = t.id AND l.expires > now())",
            (),
        )
        return [Turn(*r) for r in rows]

    async def get_permission(self, request_id: str) -> PermissionRequest | None:
        row = await self._one(f"{_PERMISSION_SQL} WHERE id = %s", (request_id,))
        return _permission(row) if row else None

    async def pending_permissions(self, session_id: str) -> list[PermissionRequest]:
        """Those of turns running somewhere (a dead instance's are expired by recovery)."""
        rows = await self._all(
            f"{_PERMISSION_SQL} p WHERE session_id = %s AND status = 'pending' AND EXISTS"
            " (SELECT 1 FROM turn_leases l WHERE l.turn_id = p.turn_id AND l.expires > now())"
            " ORDER BY created, n",
            (session_id,),
        )
        return [_permission(r) for r in rows]

    async def vacuum(self) -> None:
        """Nothing: PostgreSQL's autovacuum reuses the space of deleted rows."""

    async def last_event(self, session_id: str, type: str) -> Event | None:
        row = await self._one(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = %s AND type = %s"
            " ORDER BY seq DESC LIMIT 1",
            (session_id, type),
        )
        return _event(row) if row else None


@asynccontextmanager
async def PostgresStore(url: str) -> AsyncIterator[Store]:
    """A Store on the PostgreSQL database at `url`."""
    async with open_store(PostgresBackend(url)) as store:
        yield store


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- applying a group of writes (in a worker thread) ----------------------------------


# The instance applying the ops (their handlers run in its writer thread's context).
_INSTANCE: contextvars.ContextVar[str] = contextvars.ContextVar("instance")


def _apply_all(c: psycopg.Connection, work: list[ops.WriteOp], instance: str) -> list[Any]:
    """One transaction; each op in its own savepoint, so one failing op fails alone.
    A failure of the transaction itself (connection lost, commit refused) propagates:
    `_run` makes it the StoreError of the whole group.

    The other instances are notified of the last seq stored per session; PostgreSQL
    delivers notifications at commit, in commit order, and only if it commits."""
    results: list[Any] = []
    stored: dict[str, int] = {}
    _INSTANCE.set(instance)
    with c.transaction():
        for op in work:
            if isinstance(op, ops.InsertEvents):  # row by row on failure, its own savepoints
                result = _insert_events(c, op)
                results.append(result)
                if not isinstance(result, BaseException):
                    _note(stored, [e for i, e in enumerate(op.events) if i not in result])
                continue
            try:
                with c.transaction():
                    results.append(_HANDLERS[type(op)](c, op))
            except Exception as exc:
                if c.broken:
                    raise
                results.append(_error(exc))
            else:
                _note(stored, getattr(op, "events", ()))
        if stored:  # one statement, however many sessions the group wrote to
            payloads = [f"{instance} {session_id} {seq}" for session_id, seq in stored.items()]
            c.execute(
                "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (EVENTS_CHANNEL, payloads)
            )
    return results


def _notify_control(c: psycopg.Connection, kind: str, session_id: str, argument: str) -> None:
    c.execute("SELECT pg_notify(%s, %s)", (CONTROL_CHANNEL, f"{kind} {session_id} {argument}"))


def _note(stored: dict[str, int], events: Sequence[Event]) -> None:
    for e in events:
        stored[e.session_id] = max(stored.get(e.session_id, 0), e.seq)


def _error(exc: Exception) -> StoreError:
    if isinstance(exc, psycopg.errors.IntegrityError):
        return StoreConflict(f"refused by the database: {_one_line(exc)}")
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, psycopg.Error):
        return StoreError(f"database write failed: {_one_line(exc)}")
    return StoreError(f"database write failed: {type(exc).__name__}: {exc}")


def _create_project(c: psycopg.Connection, op: ops.CreateProject) -> Project:
    _insert_project(c, op.project)
    row = c.execute(f"{_PROJECT_SQL} WHERE path = %s", (op.project.path,)).fetchone()
    assert row is not None
    return Project(*row)


def _delete_project(c: psycopg.Connection, op: ops.DeleteProject) -> bool:
    c.execute("UPDATE sessions SET project = NULL WHERE project = %s", (op.project_id,))
    return c.execute("DELETE FROM projects WHERE id = %s", (op.project_id,)).rowcount > 0


def _create_session(c: psycopg.Connection, op: ops.CreateSession) -> Session:
    stored = op.session
    if op.new_project is not None:
        # Two creates for the same new directory may race (on two instances too); the
        # path decides.
        _insert_project(c, op.new_project)
        row = c.execute("SELECT id FROM projects WHERE path = %s", (op.new_project.path,))
        stored = attrs.evolve(stored, project=row.fetchone()[0])  # type: ignore[index]
    c.execute(
        f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        _session_row(stored),
    )
    return stored


def _update_session(c: psycopg.Connection, op: ops.UpdateSession) -> None:
    row = _session_row(op.session)
    c.execute(
        "UPDATE sessions SET created=%s, updated=%s, provider=%s, model=%s, project=%s,"
        " directory=%s, title=%s, permission=%s WHERE id=%s",
        (*row[1:], row[0]),
    )


def _delete_sessions(c: psycopg.Connection, op: ops.DeleteSessions) -> list[str]:
    """Everything a session owns goes with it (ON DELETE CASCADE)."""
    ids = list(op.ids)
    if op.updated_before is None:
        cur = c.execute("DELETE FROM sessions WHERE id = ANY(%s) RETURNING id", (ids,))
    else:
        cur = c.execute(
            "DELETE FROM sessions WHERE id = ANY(%s) AND updated < %s RETURNING id",
            (ids, op.updated_before),
        )
    gone = {r[0] for r in cur.fetchall()}
    return [i for i in dict.fromkeys(ids) if i in gone]


def _save_message(c: psycopg.Connection, op: ops.SaveMessage) -> None:
    m = op.message
    c.execute(
        "INSERT INTO messages (id, session_id, turn_id, role, parts, created)"
        " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET parts = excluded.parts",
        (m.id, m.session_id, m.turn_id, m.role, json.dumps(m.parts), m.created),
    )
    c.execute(
        "UPDATE sessions SET updated = GREATEST(updated, %s) WHERE id = %s",
        (m.created, m.session_id),
    )


def _save_message_op(c: psycopg.Connection, op: ops.SaveMessage) -> None:
    """Fenced like events: no message of a turn closed already (by a survivor)."""
    row = c.execute("SELECT status FROM turns WHERE id = %s", (op.message.turn_id,)).fetchone()
    if row is not None and row[0] != "running":
        raise StoreConflict(f"turn {op.message.turn_id} was closed already ({row[0]})")
    _save_message(c, op)


def _start_turn(c: psycopg.Connection, op: ops.StartTurn) -> None:
    _save_message(c, ops.SaveMessage(op.message))
    _save_turn(c, ops.SaveTurn(op.turn))


def _save_turn(c: psycopg.Connection, op: ops.SaveTurn) -> None:
    c.execute(_UPSERT_TURN, _turn_row(op.turn))


def _close_turn(c: psycopg.Connection, op: ops.CloseTurn) -> None:
    """Refused for a turn closed already: an instance that lost its lease must not
    overwrite the end a survivor recorded (row-locked: of two closers, one wins)."""
    row = c.execute("SELECT status FROM turns WHERE id = %s FOR UPDATE", (op.turn.id,)).fetchone()
    if row is not None and row[0] != "running":
        raise StoreConflict(f"turn {op.turn.id} was closed already ({row[0]})")
    if op.message is not None:
        _save_message(c, ops.SaveMessage(op.message))
    _expire_permissions(c, ops.ExpirePermissions([op.turn.id]))
    if op.events:
        c.execute(_INSERT_EVENTS, _columns([_event_row(e) for e in op.events]))
    _save_turn(c, ops.SaveTurn(op.turn))
    if op.turn.status != "running":
        # Our own turn: the lease goes. Another instance's (recovery after its lease
        # expired): it stays, expired and ours, so that instance stays fenced out.
        me = _INSTANCE.get()
        row = c.execute("SELECT instance FROM turn_leases WHERE turn_id = %s", (op.turn.id,))
        owner = row.fetchone()
        if owner is None:
            return
        _notify_control(c, "idle", op.turn.session_id, owner[0])  # as the owner's
        if owner[0] == me:
            c.execute("DELETE FROM turn_leases WHERE turn_id = %s", (op.turn.id,))
        else:
            c.execute(
                "UPDATE turn_leases SET instance = %s, expires = now() WHERE turn_id = %s",
                (me, op.turn.id),
            )


def _touch_turns(c: psycopg.Connection, op: ops.TouchTurns) -> list[str]:
    """Also renews the turns' leases (on the database's clock); returns the ids of
    those another instance asked to abort (in case its notification was missed)."""
    ids = list(op.turn_ids)
    c.execute("UPDATE turns SET alive = %s WHERE id = ANY(%s) AND status = 'running'", (op.at, ids))
    rows = c.execute(
        "UPDATE turn_leases SET expires = now() + make_interval(secs => %s)"
        " WHERE turn_id = ANY(%s) AND instance = %s AND expires > now()"
        " RETURNING turn_id, abort",
        (LEASE_SECONDS, ids, _INSTANCE.get()),
    ).fetchall()
    return [turn_id for turn_id, abort in rows if abort]


def _save_permission(c: psycopg.Connection, op: ops.SavePermission) -> None:
    r = op.request
    c.execute(
        "INSERT INTO permissions (id, session_id, turn_id, tool, args, status, created)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET"
        " session_id = excluded.session_id, turn_id = excluded.turn_id, tool = excluded.tool,"
        " args = excluded.args, status = excluded.status, created = excluded.created",
        (r.id, r.session_id, r.turn_id, r.tool, json.dumps(r.args), r.status, r.created),
    )


def _expire_permissions(c: psycopg.Connection, op: ops.ExpirePermissions) -> int:
    return c.execute(
        "UPDATE permissions SET status = 'expired' WHERE status = 'pending' AND turn_id = ANY(%s)",
        (list(op.turn_ids),),
    ).rowcount


def _flush(c: psycopg.Connection, op: ops.Flush) -> None:
    pass


# One handler per write op (storage.ops); a new op is a function and a line here.
_HANDLERS: dict[type, Callable[[psycopg.Connection, Any], Any]] = {
    ops.CreateProject: _create_project,
    ops.DeleteProject: _delete_project,
    ops.CreateSession: _create_session,
    ops.UpdateSession: _update_session,
    ops.DeleteSessions: _delete_sessions,
    ops.SaveMessage: _save_message_op,
    ops.StartTurn: _start_turn,
    ops.SaveTurn: _save_turn,
    ops.CloseTurn: _close_turn,
    ops.TouchTurns: _touch_turns,
    ops.SavePermission: _save_permission,
    ops.ExpirePermissions: _expire_permissions,
    ops.Flush: _flush,
}


def _insert_events(c: psycopg.Connection, op: ops.InsertEvents) -> set[int] | StoreError:
    """Insert the events; return the indexes of those that could not be stored.

    One statement for the whole batch (arrays, unnest); if it fails (e.g. a session
    deleted under a running turn), the rows are retried one by one, each in its own
    savepoint, so only the failing ones are lost.
    """
    try:
        rows = [_event_row(e) for e in op.events]
    except Exception as exc:  # an unserialisable event: all of them are lost, not the writer
        return _error(exc)
    if not rows:
        return set()
    fenced = _fenced_sessions(c, {e.session_id for e in op.events})
    if fenced:
        failed = {i for i, e in enumerate(op.events) if e.session_id in fenced}
        return failed | _insert_one_by_one(
            c, [(i, row) for i, row in enumerate(rows) if i not in failed]
        )
    try:
        with c.transaction():
            c.execute(_INSERT_EVENTS, _columns(rows))
        return set()
    except Exception:
        if c.broken:
            raise
    return _insert_one_by_one(c, list(enumerate(rows)))


def _fenced_sessions(c: psycopg.Connection, sessions: set[str]) -> set[str]:
    """Fencing: the sessions whose turn lease is not this instance's live one. An
    instance that lost its lease (frozen, cut off) while a survivor closed its turn
    can no longer append to it. A session that never had a lease (no turn ever ran:
    events stored by tests or tools directly) is not fenced."""
    rows = c.execute(
        "SELECT session_id, instance = %s AND expires > now() FROM turn_leases"
        " WHERE session_id = ANY(%s) FOR SHARE",
        (_INSTANCE.get(), list(sessions)),
    ).fetchall()
    return {session_id for session_id, ours in rows if not ours}


def _insert_one_by_one(c: psycopg.Connection, rows: list[tuple[int, tuple]]) -> set[int]:
    failed = set()
    for i, row in rows:
        try:
            with c.transaction():
                c.execute(_INSERT_EVENT, row)
        except Exception:
            if c.broken:
                raise
            failed.add(i)
    return failed


_RUNNING_IN_SESSION = "SELECT 1 FROM turns WHERE session_id = %s AND status = 'running' LIMIT 1"
# Taken if free or expired; the row lock makes two instances claiming at once take turns.
_CLAIM_LEASE = (
    "INSERT INTO turn_leases VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
    " ON CONFLICT (session_id) DO UPDATE SET turn_id = excluded.turn_id,"
    " instance = excluded.instance, expires = excluded.expires"
    " WHERE turn_leases.expires < now() RETURNING 1"
)
# The cluster row holds when the task last ran (the database's clock, epoch seconds).
_CLAIM_PERIODIC = (
    "INSERT INTO cluster VALUES (%(key)s, extract(epoch FROM now())::text)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    " WHERE cluster.value::float8 <= extract(epoch FROM now()) - %(every)s RETURNING 1"
)
_ANSWER_REMOTE = (
    "UPDATE permissions p SET status = %s WHERE id = %s AND session_id = %s"
    " AND status = 'pending' AND EXISTS (SELECT 1 FROM turn_leases l"
    " WHERE l.turn_id = p.turn_id AND l.expires > now()) RETURNING tool"
)
_PROJECT_SQL = "SELECT id, name, path, created FROM projects"
_PERMISSION_SQL = "SELECT id, session_id, turn_id, tool, args, status, created FROM permissions"
_SESSION_SQL = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = %s"
_HEAD_SQL = (
    "SELECT count(*), (SELECT id FROM messages WHERE session_id = %s ORDER BY ord DESC LIMIT 1)"
    " FROM messages WHERE session_id = %s"
)
_MESSAGES_SQL = (
    "SELECT id, session_id, turn_id, role, parts, created FROM messages"
    " WHERE session_id = %s ORDER BY ord"
)
_LAST_SEQ_SQL = "SELECT max(seq) FROM events WHERE session_id = %s"
_SESSION_LAST_SEQ_SQL = (
    "SELECT (SELECT 1 FROM sessions WHERE id = %s),"
    " (SELECT max(seq) FROM events WHERE session_id = %s)"
)
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (%s,%s,%s,%s,%s)"
_INSERT_EVENTS = (
    f"INSERT INTO events ({_EVENT_COLUMNS})"
    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::float8[])"
)
_UPSERT_TURN = (
    f"INSERT INTO turns ({_TURN_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (id) DO UPDATE SET session_id = excluded.session_id,"
    " message_id = excluded.message_id, status = excluded.status, started = excluded.started,"
    " ended = excluded.ended, input_tokens = excluded.input_tokens,"
    " output_tokens = excluded.output_tokens, cost = excluded.cost, alive = excluded.alive"
)


def _event_row(e: Event) -> tuple:
    return (e.session_id, int(e.seq), e.type, json.dumps(e.data), float(e.created))


def _columns(rows: list[tuple]) -> tuple[list[Any], ...]:
    return tuple(list(col) for col in zip(*rows, strict=True))


def _event(r: tuple) -> Event:
    return Event(r[0], r[1], r[2], json.loads(r[3]), r[4])


def _insert_project(c: psycopg.Connection, p: Project) -> None:
    c.execute(
        "INSERT INTO projects (id, name, path, created) VALUES (%s,%s,%s,%s)"
        " ON CONFLICT (path) DO NOTHING",
        (p.id, p.name, p.path, p.created),
    )

"""Versioned PostgreSQL schema migrations. Append to MIGRATIONS; never edit an old one.

The table `schema_version` records how many have been applied. `migrate` runs in one
transaction under an advisory lock: instances starting together take turns, and the
second finds the work done. PostgreSQL's DDL is transactional, so a crash mid-migration
leaves the old schema intact.
"""

from __future__ import annotations

import psycopg

# pg_advisory_xact_lock key: "opencode" in ASCII, so it does not collide by accident.
MIGRATION_LOCK = 0x6F70656E636F6465

MIGRATIONS: list[str] = [
    # 1: the schema of SQLite's migrations 1 and 2 (storage.migrations), in PostgreSQL.
    # `n` columns keep insertion order where SQLite used the rowid.
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        path TEXT NOT NULL UNIQUE,
        created BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        n BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        provider TEXT,
        model TEXT,
        project TEXT,
        directory TEXT NOT NULL,
        title TEXT NOT NULL,
        permission TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sessions_project ON sessions(project, n);
    CREATE INDEX sessions_updated ON sessions(updated);
    CREATE TABLE events (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        turn_id TEXT NOT NULL,
        role TEXT NOT NULL,
        parts TEXT NOT NULL,
        created BIGINT NOT NULL,
        ord BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX messages_session ON messages(session_id, ord);
    CREATE TABLE turns (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        message_id TEXT NOT NULL,
        status TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        ended DOUBLE PRECISION,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION NOT NULL DEFAULT 0,
        alive DOUBLE PRECISION
    );
    CREATE INDEX turns_session ON turns(session_id);
    CREATE INDEX turns_running ON turns(status) WHERE status = 'running';
    CREATE TABLE permissions (
        n BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        turn_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        status TEXT NOT NULL,
        created BIGINT NOT NULL
    );
    CREATE INDEX permissions_session ON permissions(session_id, status);
    CREATE INDEX permissions_turn ON permissions(turn_id) WHERE status = 'pending';
    """,
    # 2: what several instances share (docs/scaling.md): the cluster's settings (its API
    # token), and one lease per session with a running turn, timed by the database's clock.
    """
    CREATE TABLE cluster (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE turn_leases (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
        turn_id TEXT NOT NULL,
        instance TEXT NOT NULL,
        expires TIMESTAMPTZ NOT NULL,
        abort BOOLEAN NOT NULL DEFAULT false  -- asked on another instance; see manager.abort
    );
    CREATE INDEX turn_leases_turn ON turn_leases(turn_id);
    """,
]


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema up to date (one transaction, under the advisory lock); return
    the resulting version. RuntimeError if the database is newer than this code."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (0)")
            version = 0
        else:
            version = row[0]
        if version > len(MIGRATIONS):
            raise psycopg.DataError(
                f"database schema version {version} is newer than this opencoded "
                f"({len(MIGRATIONS)}); upgrade opencoded"
            )
        for script in MIGRATIONS[version:]:
            conn.execute(script)  # several statements: the simple query protocol runs them
        conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
    return len(MIGRATIONS)

"""Versioned schema migrations. Append a new entry to MIGRATIONS; never edit an old one.

`PRAGMA user_version` records how many have been applied; each runs in its own
transaction together with the version bump, so a crash mid-migration leaves the old
schema intact.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        path TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
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
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        turn_id TEXT NOT NULL,
        role TEXT NOT NULL,
        parts TEXT NOT NULL,
        created INTEGER NOT NULL,
        ord INTEGER NOT NULL
    );
    CREATE INDEX messages_session ON messages(session_id, ord);
    CREATE TABLE turns (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        status TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX turns_session ON turns(session_id);
    CREATE INDEX turns_running ON turns(status) WHERE status = 'running';
    CREATE TABLE permissions (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        turn_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        status TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE INDEX permissions_session ON permissions(session_id, status);
    """,
    # 2: foreign keys with ON DELETE CASCADE (a deleted session takes everything it owns
    # with it, and no write can add a row to a session that is gone); `turns.alive`, the
    # last time a running turn was known alive (recovery's estimate of when it ended).
    # SQLite cannot add a constraint to a table: each child table is rebuilt. Rows of
    # sessions that no longer exist (left by an old race) are dropped on the way.
    """
    CREATE TABLE events_new (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    INSERT INTO events_new SELECT * FROM events WHERE session_id IN (SELECT id FROM sessions);
    DROP TABLE events;
    ALTER TABLE events_new RENAME TO events;
    CREATE TABLE messages_new (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        turn_id TEXT NOT NULL,
        role TEXT NOT NULL,
        parts TEXT NOT NULL,
        created INTEGER NOT NULL,
        ord INTEGER NOT NULL
    );
    INSERT INTO messages_new SELECT * FROM messages
        WHERE session_id IN (SELECT id FROM sessions);
    DROP TABLE messages;
    ALTER TABLE messages_new RENAME TO messages;
    CREATE INDEX messages_session ON messages(session_id, ord);
    CREATE TABLE turns_new (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        message_id TEXT NOT NULL,
        status TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        alive REAL
    );
    INSERT INTO turns_new SELECT *, NULL FROM turns WHERE session_id IN (SELECT id FROM sessions);
    DROP TABLE turns;
    ALTER TABLE turns_new RENAME TO turns;
    CREATE INDEX turns_session ON turns(session_id);
    CREATE INDEX turns_running ON turns(status) WHERE status = 'running';
    CREATE TABLE permissions_new (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        turn_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        status TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    INSERT INTO permissions_new SELECT * FROM permissions
        WHERE session_id IN (SELECT id FROM sessions);
    DROP TABLE permissions;
    ALTER TABLE permissions_new RENAME TO permissions;
    CREATE INDEX permissions_session ON permissions(session_id, status);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; return the resulting version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this opencoded "
            f"({len(MIGRATIONS)}); upgrade opencoded"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)

"""Permission decisions and the requests a turn waits on.

Decision order for a tool: the session's own `permission` map (which also holds what the
user answered `always` to), then the config's `permission` section, then the contract's
defaults (reading tools allow; write, edit, bash, webfetch and MCP tools ask). In each map
a key is a tool name in which `*` matches any run of characters (`"everything_*"`); the
exact name wins over patterns, and of several matching patterns the longest wins.

A pending request lives in two places: in storage (so `GET /sessions/:id/permissions` lists
it and it survives for inspection) and in memory as a `Waiter` the turn sleeps on. Only the
in-memory waiter can be answered: a request whose turn is gone (aborted, daemon restarted)
cannot resume anything, so answering it is a 404 like an unknown id.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Literal
from weakref import WeakKeyDictionary

import attrs
import trio

from ..config import DEFAULT_PERMISSIONS, Config
from ..daemon import Daemon

Action = Literal["allow", "ask", "deny"]
Response = Literal["once", "always", "reject"]
RESPONSES: tuple[str, ...] = ("once", "always", "reject")


@functools.lru_cache(maxsize=512)
def _pattern(key: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in key.split("*")), re.DOTALL)


def lookup(table: Mapping[str, str], tool: str) -> str | None:
    """The action `table` sets for `tool`: its exact key, else the longest matching pattern."""
    action = table.get(tool)
    if action in ("allow", "ask", "deny"):
        return action
    matches = [key for key in table if "*" in key and _pattern(key).fullmatch(tool)]
    if matches:
        action = table[max(matches, key=len)]
        if action in ("allow", "ask", "deny"):
            return action
    return None


def decide(tool: str, session_permission: Mapping[str, str], config: Config) -> str:
    """allow, ask or deny for one tool call."""
    for table in (session_permission, config.permission):
        action = lookup(table, tool)
        if action is not None:
            return action
    return DEFAULT_PERMISSIONS.get(tool, "ask")


@attrs.define(eq=False)
class Waiter:
    """One request a turn is blocked on; `response` is set once, then `answered` fires."""

    id: str
    session_id: str
    tool: str
    answered: trio.Event = attrs.Factory(trio.Event)
    response: str | None = None


@attrs.define(eq=False)
class AgentState:
    """The agent's per-daemon memory: permission waiters, submit locks, project paths."""

    waiters: dict[str, Waiter] = attrs.Factory(dict)
    submit_locks: dict[str, trio.Lock] = attrs.Factory(dict)
    project_paths: dict[str, str] = attrs.Factory(dict)  # project id -> path (immutable)

    def claim(self, permission_id: str, session_id: str) -> Waiter | None:
        """The waiter for an answer, marked as answered; None if unknown or answered."""
        waiter = self.waiters.get(permission_id)
        if waiter is None or waiter.session_id != session_id or waiter.response is not None:
            return None
        return waiter


_STATES: WeakKeyDictionary[Daemon, AgentState] = WeakKeyDictionary()


def agent_state(daemon: Daemon) -> AgentState:
    state = _STATES.get(daemon)
    if state is None:
        state = _STATES[daemon] = AgentState()
    return state

"""Permission decisions and the requests a turn waits on.

Decision order for a tool: the session's own `permission` map (which also holds what the
user answered `always` to), then the config's `permission` section, then the contract's
defaults (reading tools allow; write, edit, bash, webfetch and MCP tools ask). In both maps
a key is a tool name in which `*` matches any run of characters (`"everything_*"`); see
config.permission_lookup.

A pending request lives in two places: in storage (so `GET /sessions/:id/permissions` lists
it and it survives for inspection) and in memory as a `Waiter` the turn sleeps on. Only the
in-memory waiter can be answered: a request whose turn is gone (aborted, daemon restarted)
cannot resume anything, so answering it is a 404 like an unknown id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from weakref import WeakKeyDictionary

import attrs
import trio

from ..config import Config, permission_lookup
from ..daemon import Daemon

Action = Literal["allow", "ask", "deny"]
Response = Literal["once", "always", "reject"]
RESPONSES: tuple[str, ...] = ("once", "always", "reject")


def decide(tool: str, session_permission: Mapping[str, str], config: Config) -> str:
    """allow, ask or deny for one tool call."""
    action = permission_lookup(session_permission, tool)
    if action is not None:
        return action
    return config.permission_for(tool)


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
    """The agent's per-daemon memory: permission waiters, project paths, snapshot indexes."""

    waiters: dict[str, Waiter] = attrs.Factory(dict)
    project_paths: dict[str, str] = attrs.Factory(dict)  # project id -> path (immutable)
    trackers: dict[Any, Any] = attrs.Factory(dict)  # directory -> changes.Tracker
    histories: dict[str, Any] = attrs.Factory(dict)  # session id -> history.History

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

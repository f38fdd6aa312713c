"""The agent: turns that stream, call tools, ask permission and stop when told.

The transports (HTTP routes, the WebSocket view) call only the functions exported here;
the turn itself (agent.turn) runs in its session's nursery and never sees a request.
"""

from .api import (
    SubmittedTurn,
    abort_turn,
    answer_permission,
    list_messages,
    pending_permissions,
    submit_message,
    validate_parts,
)

__all__ = [
    "SubmittedTurn",
    "abort_turn",
    "answer_permission",
    "list_messages",
    "pending_permissions",
    "submit_message",
    "validate_parts",
]

"""Sessions at run time: their event logs, their nurseries and the turns running in them."""

from .events import Broadcaster, EventLog
from .manager import RunningTurn, SessionManager, SessionRuntime, open_session_manager

__all__ = [
    "Broadcaster",
    "EventLog",
    "RunningTurn",
    "SessionManager",
    "SessionRuntime",
    "open_session_manager",
]

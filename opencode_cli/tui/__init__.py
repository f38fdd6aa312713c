"""``opencode tui``: the full-screen terminal app, a client of the daemon like any other.

Built on Textual (https://textual.textualize.io): a maintained, asyncio-based framework with
Markdown and syntax-highlighted code, scrolling, modal dialogs, mouse support, a headless test
driver (``App.run_test`` and its pilot) and SVG screenshots. Only this package imports it, and
only ``opencode tui`` imports this package, so the other commands start as fast as before.

The app talks to the daemon through ``AsyncClient`` (Unix socket or ``OPENCODE_URL``) and shows
a session by following its event log over SSE: whatever another client (a second TUI, a
``send``) does in the session appears here too, and after the daemon restarts it reconnects
with ``after=`` the last seq it saw, missing nothing.
"""

from .app import OpencodeApp

__all__ = ["OpencodeApp"]

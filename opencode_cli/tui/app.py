"""The ``opencode tui`` application: sessions on the left, the conversation, a prompt.

Everything shown comes from the daemon: the session list from ``GET /sessions``, the history
from ``GET /sessions/:id/messages``, and what happens next from the session's SSE event log,
which the app follows for as long as a session is open (reconnecting with ``after=``).
Sending is ``POST …/messages`` with ``async: true``; the reply arrives on that same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.widgets import Footer, Header, Input, Label, ListView, Static

from opencode_cli import _routes as r
from opencode_cli._async_client import AsyncClient
from opencode_cli._exceptions import (
    APIError,
    InvalidRequestError,
    NotFoundError,
    OpencodeError,
    TransportError,
)
from opencode_cli._models import Event, Message
from opencode_cli._wire import SSEParser
from opencode_cli.cli._output import short_text
from opencode_cli.cli._sessions import title_for
from opencode_cli.cli._turn import compaction_line, key_hint, retry_line
from opencode_cli.cli.sessions import diff_text, model_label

from .widgets import (
    AssistantText,
    ConfirmScreen,
    DiffScreen,
    ModelPicker,
    Notice,
    PermissionScreen,
    SessionItem,
    ToolBlock,
    UserMessage,
)

CONNECT_WAIT = 10.0
MAX_BACKOFF = 2.0


class OpencodeApp(App[None]):
    TITLE = "opencode"
    CSS = """
    #sidebar { width: 36; border-right: solid $primary-background; }
    #scope { padding: 0 1; color: $text-muted; text-style: bold; }
    #sessions { height: 1fr; }
    #conversation { height: 1fr; padding: 0 1; }
    #status { height: 1; padding: 0 1; color: $text-muted; background: $boost; }
    #prompt { margin: 0 0 0 0; }
    """
    BINDINGS = [
        Binding("escape", "abort", "Abort turn"),
        Binding("ctrl+c", "abort", "Abort turn", show=False, priority=True),
        Binding("ctrl+n", "new_session", "New session"),
        Binding("ctrl+l", "focus_sessions", "Sessions"),
        Binding("ctrl+t", "toggle_scope", "All projects"),
        Binding("ctrl+o", "pick_model", "Model"),
        Binding("ctrl+g", "show_diff", "Diff"),
        Binding("delete", "delete_session", "Delete session"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    busy: reactive[bool] = reactive(False)
    connected: reactive[bool] = reactive(True)

    def __init__(
        self,
        url: str | None = None,
        *,
        session_id: str | None = None,
        model: str | None = None,
        directory: str | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.client: AsyncClient | None = None
        self.directory = os.path.realpath(directory or os.getcwd())
        self.initial_session = session_id
        self.session_id: str | None = None
        self.session_model: str | None = None
        self.model = model
        self.all_projects = False
        self.has_diff = False
        self.last_seq: int | None = None
        self._text: AssistantText | None = None
        self._tools: dict[str, ToolBlock] = {}
        self._asked: set[str] = set()
        self._summary = ""
        self._retrying = ""  # the last `retry` event's line, shown until the next event
        self._list_lock = asyncio.Lock()

    # ---- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("", id="scope")
                yield ListView(id="sessions")
            with Vertical(id="main"):
                yield VerticalScroll(id="conversation")
                yield Static("", id="status", markup=False)
                yield Input(placeholder="Message · Enter sends · Esc aborts", id="prompt")
        yield Footer()

    async def on_mount(self) -> None:
        self.client = AsyncClient(self.url)
        self.query_one("#prompt", Input).focus()
        await self._detect_diff()
        await self.refresh_sessions()
        self.watch_feed()
        if self.initial_session:
            await self.open_session(self.initial_session)
        else:
            self.new_session()

    async def on_unmount(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def _say(self, message: str, *, severity: SeverityLevel = "information") -> None:
        """A toast; never markup, since messages carry paths and daemon errors."""
        self.notify(message, severity=severity, markup=False)

    @property
    def conversation(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    def _status(self) -> None:
        model = self.session_model or self.model or "default model"
        state = "busy" if self.busy else "idle"
        link = "" if self.connected else " · reconnecting…"
        sid = self.session_id or "new session"
        summary = f" · {self._summary}" if self._summary and not self.busy else ""
        retrying = f" · {self._retrying}" if self._retrying and self.busy else ""
        line = f"{sid} · {model} · {state}{retrying}{summary}{link}"
        self.query_one("#status", Static).update(line)

    def watch_busy(self) -> None:
        self._status()

    def watch_connected(self) -> None:
        self._status()

    # ---- sessions ------------------------------------------------------------------------

    async def refresh_sessions(self) -> None:
        async with self._list_lock:  # the feed and the user's actions may refresh at once
            await self._refresh_sessions()

    async def _refresh_sessions(self) -> None:
        assert self.client is not None
        scope = "all projects" if self.all_projects else "this directory"
        self.query_one("#scope", Label).update(f"Sessions · {scope}")
        try:
            sessions = await self.client.sessions.list(limit=100)
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")
            return
        if not self.all_projects:
            sessions = [
                s
                for s in sessions
                if s.directory and os.path.realpath(s.directory) == self.directory
            ]
        view = self.query_one("#sessions", ListView)
        await view.clear()
        items = []
        for s in sessions:
            if s.id == self.session_id and s.title:
                self.sub_title = s.title  # renamed meanwhile (config titles: model)
            mark = "● " if s.status == "busy" else ""
            where = "" if not self.all_projects else f"  ({os.path.basename(s.directory or '')})"
            items.append(SessionItem(s.id, f"{mark}{s.title or s.id}{where}"))
        await view.extend(items)
        ids = [item.session_id for item in items]
        if self.session_id in ids:
            view.index = ids.index(self.session_id)

    @work(group="feed", exit_on_error=False)
    async def watch_feed(self) -> None:
        """Keep the session list current: `GET /events` says when sessions appear, go, or
        change status, whichever client did it."""
        assert self.client is not None
        while True:
            try:
                async with self.client._transport.stream(
                    "GET", "/events", headers={"Accept": "text/event-stream"}
                ) as lines:
                    parser = SSEParser()
                    async for line in lines:
                        notice = parser.feed(line)
                        if notice is not None and notice.type.startswith("session."):
                            await self.refresh_sessions()
            except OpencodeError:
                pass
            await asyncio.sleep(MAX_BACKOFF)

    def _reset_conversation(self) -> None:
        self.workers.cancel_group(self, "follow")
        self.conversation.remove_children()
        self._text, self._tools, self._asked = None, {}, set()
        self.last_seq, self._summary = None, ""

    def new_session(self) -> None:
        """A new session starts when its first message is sent (titled by it)."""
        self._reset_conversation()
        self.session_id = None
        self.session_model = None
        self.busy = False
        self.sub_title = "new session"
        self._status()

    async def open_session(self, session_id: str) -> None:
        assert self.client is not None
        self._reset_conversation()
        try:
            session = await self.client.sessions.get(session_id)
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")
            self.new_session()
            return
        self.session_id = session.id
        self.session_model = model_label(session)
        self.sub_title = session.title or session.id
        ready, go = asyncio.Event(), asyncio.Event()
        self.follow(session.id, ready, go)
        # Connected before reading the history: nothing that happens meanwhile is lost.
        try:
            await asyncio.wait_for(ready.wait(), CONNECT_WAIT)
        except TimeoutError:
            self._say("cannot follow the session's events yet; retrying", severity="warning")
        try:
            for message in await self.client.sessions.messages(session.id):
                await self._show_message(message)
            self.busy = session.status == "busy"
            for p in await self.client.permissions.list(session.id):
                self.ask_permission(p.id, p.tool, p.args)
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")
        finally:
            go.set()
        self.conversation.scroll_end(animate=False)
        self._status()

    async def _show_message(self, message: Message) -> None:
        for part in message.parts:
            if part.type == "text" and part.text:
                widget = UserMessage(part.text) if message.role == "user" else None
                if widget is None:
                    widget = AssistantText(part.text)
                await self.conversation.mount(widget)
            elif part.type == "tool":
                block = ToolBlock(part.id or "", part.tool or "?", part.args)
                self._tools[block.call_id] = block  # its result may still come as an event
                await self.conversation.mount(block)
                if part.output is not None or part.status in ("completed", "error"):
                    block.finish(part.output or "", bool(part.error))

    # ---- following the event log ---------------------------------------------------------

    @work(group="follow", exclusive=True, exit_on_error=False)
    async def follow(self, session_id: str, ready: asyncio.Event, go: asyncio.Event) -> None:
        """Follow the session's events; reconnect with after=last seq when the link drops."""
        assert self.client is not None
        delay = 0.1
        while True:
            call = r.events(session_id, self.last_seq)
            parser = SSEParser()
            try:
                async with self.client._transport.stream(
                    call.method,
                    call.path,
                    params=call.params,
                    headers={"Accept": "text/event-stream"},
                ) as lines:
                    self.connected, delay = True, 0.1
                    ready.set()
                    await go.wait()
                    async for line in lines:
                        event = parser.feed(line)
                        if event is not None and event.seq != self.last_seq:
                            self.last_seq = event.seq if event.seq is not None else self.last_seq
                            await self._handle_safely(event)
            except NotFoundError:
                self._say(f"session {session_id} is gone", severity="error")
                return
            except (TransportError, APIError):
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _handle_safely(self, ev: Event) -> None:
        """A display bug must not stop the follower: show it and go on with the next event."""
        try:
            await self.handle_event(ev)
        except Exception as exc:
            self.log.error(f"cannot show {ev.type} event: {exc!r}")
            self._say(f"cannot show a {ev.type} event: {exc!r}", severity="error")

    async def handle_event(self, ev: Event) -> None:
        data = ev.data
        if ev.type == "retry":  # in the status line until the next event
            self._retrying, self.busy = retry_line(data), True
            self._status()
        elif self._retrying:
            self._retrying = ""
            self._status()
        if ev.type == "text-delta":
            self.busy = True
            text = await self._text_block()
            await text.add(str(data.get("text", "")))
        elif ev.type == "message":
            text = self._text or await self._text_block()
            await text.replace(str(data.get("content", "")))
            self._text = None
        elif ev.type in ("tool", "tool-call"):
            self.busy, self._text = True, None
            await self._tool_block(data)
        elif ev.type == "tool-result":
            block = await self._tool_block(data)
            block.finish(str(data.get("output") or ""), bool(data.get("error")))
        elif ev.type == "permission":
            self.ask_permission(str(data.get("id")), str(data.get("tool", "?")), data.get("args"))
        elif ev.type in ("compaction", "retry"):
            line = compaction_line(data) if ev.type == "compaction" else retry_line(data)
            await self.conversation.mount(Notice(line))
        elif ev.type == "error":
            message = f"error: {short_text(str(data.get('message', '')))} ({data.get('code')})"
            await self.conversation.mount(Notice(message, error=True))
        elif ev.type == "complete":
            self._turn_ended(data)
            await self.refresh_sessions()
        if ev.type in ("tool-result", "complete"):
            await self._close_answered_dialog()
        self.conversation.scroll_end(animate=False)

    async def _close_answered_dialog(self) -> None:
        """A request answered elsewhere (another TUI, `opencode permissions answer`) closes."""
        screen = self.screen
        if not isinstance(screen, PermissionScreen) or self.session_id is None:
            return
        assert self.client is not None
        try:
            pending = {p.id for p in await self.client.permissions.list(self.session_id)}
        except OpencodeError:
            return
        if screen.permission_id not in pending and self.screen is screen:
            screen.dismiss(None)

    async def _text_block(self) -> AssistantText:
        if self._text is None:
            self._text = AssistantText()
            await self.conversation.mount(self._text)
        return self._text

    async def _tool_block(self, data: dict[str, Any]) -> ToolBlock:
        call_id = str(data.get("id", ""))
        block = self._tools.get(call_id)
        if block is None:
            tool = str(data.get("tool", "?"))
            block = self._tools[call_id] = ToolBlock(call_id, tool, data.get("args"))
            await self.conversation.mount(block)
        return block

    def _turn_ended(self, data: dict[str, Any]) -> None:
        self._text = None
        self.busy = False
        status = str(data.get("status", "?"))
        bits = [status]
        if data.get("tokens"):
            bits.append(f"{data['tokens']:,} tokens")
        if isinstance(data.get("duration_ms"), int | float):
            bits.append(f"{data['duration_ms'] / 1000:.1f}s")
        self._summary = " · ".join(bits)
        if status != "completed":
            self.conversation.mount(Notice(f"turn {status}", error=status == "error"))
        self._status()

    # ---- permissions ---------------------------------------------------------------------

    def ask_permission(self, permission_id: str, tool: str, args: Any) -> None:
        if permission_id in self._asked or self.session_id is None:
            return
        self._asked.add(permission_id)
        session_id = self.session_id

        def answered(answer: str | None) -> None:
            if answer is not None:  # None: answered elsewhere, the dialog just closes
                self.respond(session_id, permission_id, answer)

        self.push_screen(PermissionScreen(permission_id, tool, args), answered)

    @work(exit_on_error=False)
    async def respond(self, session_id: str, permission_id: str, answer: str) -> None:
        assert self.client is not None
        try:
            await self.client.permissions.respond(session_id, permission_id, answer)  # type: ignore[arg-type]
        except APIError as exc:
            self._say(f"not answered: {short_text(exc.message)}", severity="warning")

    # ---- sending and aborting ------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        assert self.client is not None
        text = event.value.strip()
        if not text:
            return
        if self.busy:
            self._say("a turn is running: Esc aborts it", severity="warning")
            return
        event.input.value = ""
        created = None
        try:
            if self.session_id is None:
                provider, _, model = (self.model or "").partition("/")
                session = await self.client.sessions.create(
                    provider=provider or None,
                    model=model or None,
                    directory=self.directory,
                    title=title_for(text),
                )
                created = session.id
                await self.open_session(session.id)
            await self.conversation.mount(UserMessage(text))
            self.conversation.scroll_end(animate=False)
            self.busy = True
            assert self.session_id is not None
            await self.client.sessions.submit(self.session_id, text)
        except OpencodeError as exc:
            self.busy = False
            message = exc.message if isinstance(exc, APIError) else str(exc)
            notice = f"error: {short_text(message)}"
            if hint := key_hint(message):
                notice += f"\nhint: {hint}"
            if created is not None and isinstance(exc, InvalidRequestError):
                await self._forget(created)  # refused before anything was stored
                event.input.value = text  # to send again once fixed
            await self.conversation.mount(Notice(notice, error=True))
        if created is not None:
            await self.refresh_sessions()

    async def _forget(self, session_id: str) -> None:
        """Delete the session a refused first message created: no empty session per attempt."""
        assert self.client is not None
        with contextlib.suppress(OpencodeError):
            await self.client.sessions.delete(session_id)
        self.new_session()

    async def action_abort(self) -> None:
        assert self.client is not None
        if not (self.busy and self.session_id):
            if isinstance(self.focused, Input):
                self._say("nothing to abort (Ctrl+Q quits)")
            return
        try:
            await self.client.sessions.abort(self.session_id)
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")

    # ---- session list actions ------------------------------------------------------------

    @on(ListView.Selected, "#sessions")
    async def switch(self, event: ListView.Selected) -> None:
        item = event.item
        if isinstance(item, SessionItem) and item.session_id != self.session_id:
            await self.open_session(item.session_id)
            self.query_one("#prompt", Input).focus()

    def action_new_session(self) -> None:
        self.new_session()
        self.query_one("#prompt", Input).focus()

    def action_focus_sessions(self) -> None:
        self.query_one("#sessions", ListView).focus()

    async def action_toggle_scope(self) -> None:
        self.all_projects = not self.all_projects
        await self.refresh_sessions()

    def action_delete_session(self) -> None:
        view = self.query_one("#sessions", ListView)
        item = view.highlighted_child
        if not isinstance(item, SessionItem) or self.focused is not view:
            return
        session_id = item.session_id

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.delete_session(session_id)

        self.push_screen(ConfirmScreen(f"Delete session {item.label!r}?"), confirmed)

    @work(exit_on_error=False)
    async def delete_session(self, session_id: str) -> None:
        assert self.client is not None
        try:
            await self.client.sessions.delete(session_id)
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")
            return
        if session_id == self.session_id:
            self.new_session()
        await self.refresh_sessions()

    # ---- models and diff -----------------------------------------------------------------

    @work(exit_on_error=False)
    async def action_pick_model(self) -> None:
        assert self.client is not None
        try:
            models = await self.client.models()
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")
            return
        choices = [(f"{m.provider}/{m.id}", f"{m.provider}/{m.id}  {m.name or ''}") for m in models]
        picked = await self.push_screen_wait(ModelPicker(choices, self.model))
        if picked:
            self.model = picked
            if self.session_id is not None:
                self._say(f"{picked} is for new sessions (Ctrl+N)")
            self._status()

    async def _detect_diff(self) -> None:
        """``GET /sessions/:id/diff`` is newer than some daemons: look for it in the API."""
        assert self.client is not None
        try:
            spec = await self.client._call(r.Call("GET", "/openapi.json"))
        except OpencodeError:
            return
        paths = spec.get("paths", {}) if isinstance(spec, dict) else {}
        self.has_diff = any(p.startswith("/sessions/") and p.endswith("/diff") for p in paths)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_diff":
            return self.has_diff and self.session_id is not None
        return True

    @work(exit_on_error=False)
    async def action_show_diff(self) -> None:
        assert self.client is not None
        if not (self.has_diff and self.session_id):
            return
        path = f"/sessions/{self.session_id}/diff"
        try:
            raw = await self.client._transport.request("GET", path)
        except OpencodeError as exc:
            self._say(short_text(str(exc)), severity="error")
            return
        await self.push_screen(DiffScreen(diff_text(raw)))

"""Running one turn on a terminal or a pipe: shared by ``send`` and ``tui``.

Assistant text goes to stdout as it streams; tool lines, permission prompts and the summary go to
stderr, so ``opencode send … > answer.md`` captures only the answer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from opencode_cli import Client, Event, ProtocolError

from ._output import Spinner, is_tty, paint, short_text

#: The argument shown for each known tool (contract section 6); others show compact JSON.
_KEY_ARG = {
    "bash": "command",
    "read": "path",
    "write": "path",
    "edit": "path",
    "list": "path",
    "glob": "pattern",
    "grep": "pattern",
    "webfetch": "url",
}
_TODO_MARKS = {"pending": "[ ]", "in_progress": "[~]", "completed": "[x]"}

Ask = Callable[[Event], str]

#: Lines of a tool's output shown without --verbose.
TOOL_OUTPUT_LINES = 6
RESTART_HINT = (
    "a running daemon keeps the environment it started with: after exporting a key, run "
    "`opencode daemon restart`; after editing the config file, `opencode daemon reload`"
)


def key_hint(message: str) -> str | None:
    """The restart hint when an error is about a missing or rejected API key."""
    keywords = ("API_KEY", "apiKey", "API key", "no model provider is configured")
    return RESTART_HINT if any(k in message for k in keywords) else None


def tool_summary(tool: str, args: Any, width: int = 100) -> str:
    args = args if isinstance(args, dict) else {}
    key = _KEY_ARG.get(tool)
    if key is not None and isinstance(args.get(key), str):
        text = args[key]
    elif key == "path":
        text = "."
    else:
        text = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class TextRenderer:
    """Prints events for people; stays plain when the streams are not terminals."""

    def __init__(
        self, stdout: TextIO | None = None, stderr: TextIO | None = None, *, verbose: bool = False
    ) -> None:
        self.o = stdout or sys.stdout
        self.e = stderr or sys.stderr
        self.verbose = verbose
        self.spinner = Spinner(self.e)
        self._mid_line = False  # stdout has text without a final newline
        self._streamed = False  # text-deltas seen for the current text block

    def waiting(self, label: str = "waiting for the model", *, now: bool = False) -> None:
        """Show the spinner (terminals only) until the next event; `now`: draw it at once."""
        if not self._mid_line or not is_tty(self.o):
            self.spinner.start(label, now=now)

    def _text(self, text: str) -> None:
        if not text:
            return
        self.o.write(text)
        self.o.flush()
        self._mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        if self._mid_line:
            self.o.write("\n")
            self.o.flush()
            self._mid_line = False

    def note(self, line: str) -> None:
        """A line on stderr; when both streams share a terminal, start it on a fresh line."""
        if is_tty(self.o) and is_tty(self.e):
            self.end_line()
        self.e.write(line + "\n")
        self.e.flush()

    def event(self, ev: Event) -> None:
        self.spinner.stop()
        data = ev.data
        if ev.type == "text-delta":
            self._text(str(data.get("text", "")))
            self._streamed = True
        elif ev.type == "message":
            if not self._streamed:
                self._text(str(data.get("content", "")))
            self.end_line()
            self._streamed = False
        elif ev.type in ("tool", "tool-call"):
            tool = str(data.get("tool", "?"))
            arrow = paint("→", "cyan", self.e)
            self.note(
                f"{arrow} {paint(tool, 'bold', self.e)} {tool_summary(tool, data.get('args'))}"
            )
            self.waiting(f"running {tool}")
        elif ev.type == "tool-result":
            self._tool_result(data)
            self.waiting()
        elif ev.type == "todo":  # the session's task list changed: show it whole
            for item in data.get("todos") or []:
                mark = _TODO_MARKS.get(item.get("status"), "[?]")
                self.note(paint(f"  {mark} {item.get('content', '')}", "dim", self.e))
        elif ev.type == "compaction":  # the context was compacted before a step
            self.note(paint(compaction_line(data), "dim", self.e))
            self.waiting()
        elif ev.type == "retry":  # the provider failed before answering: tried again soon
            line = retry_line(data)
            if self.spinner.enabled and not (self._mid_line and is_tty(self.o)):
                self.waiting(line, now=True)
            else:
                self.note(line)
        elif ev.type == "error":
            label = paint("error:", "bold red", self.e)
            message = str(data.get("message", ""))
            self.note(f"{label} {short_text(message)} ({data.get('code', '?')})")
            if hint := key_hint(message):
                self.note(paint(f"hint: {hint}", "yellow", self.e))
        elif ev.type == "complete":
            self.end_line()
            if is_tty(self.e):
                self.note(paint(_summary(data), "dim", self.e))

    def _tool_result(self, data: dict[str, Any]) -> None:
        """The tool's output, indented: the first lines (all with --verbose), red on failure."""
        lines = str(data.get("output") or "").rstrip("\n").splitlines()
        if data.get("error"):
            first = lines[0] if lines else "failed"
            self.note(paint(f"  ✗ {data.get('tool', '')}: {first[:200]}", "red", self.e))
            lines = lines[1:]
        shown = lines if self.verbose else lines[:TOOL_OUTPUT_LINES]
        for line in shown:
            self.note(paint(f"  │ {line if self.verbose else line[:200]}", "dim", self.e))
        if hidden := len(lines) - len(shown):
            self.note(paint(f"  │ … {hidden} more line(s) (--verbose shows all)", "dim", self.e))


def compaction_line(data: dict[str, Any]) -> str:
    """``context compacted (summarised): 12,345 → 3,210 tokens``."""
    what = "summarised" if data.get("summarised") else "old tool outputs elided"
    sizes = [data.get("tokens_before"), data.get("tokens_after")]
    before, after = (f"{n:,}" if isinstance(n, int) else "?" for n in sizes)
    return f"context compacted ({what}): {before} → {after} tokens"


def retry_line(data: dict[str, Any]) -> str:
    """``retrying in 1.2 s (connection refused: http://127.0.0.1:9) — attempt 2/4``."""
    delay = (data.get("delay_ms") or 0) / 1000
    why = str(data.get("reason") or "provider error")
    if data.get("url"):
        why += f": {data['url']}"
    attempt, most = data.get("attempt", "?"), data.get("max_attempts", "?")
    return f"retrying in {delay:.1f} s ({why}) — attempt {attempt}/{most}"


def _summary(data: dict[str, Any]) -> str:
    bits = [str(data.get("status", "?"))]
    if data.get("tokens"):
        bits.append(f"{data['tokens']:,} tokens")
    if data.get("cost"):
        bits.append(f"${data['cost']:.4f}")
    if isinstance(data.get("duration_ms"), int | float):
        bits.append(f"{data['duration_ms'] / 1000:.1f}s")
    return "[" + " · ".join(bits) + "]"


class JsonRenderer:
    """``--json``: the daemon's NDJSON lines, untouched, one per line."""

    def event(self, ev: Event) -> None:
        sys.stdout.write(ev.raw + "\n")
        sys.stdout.flush()

    def note(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def end_line(self) -> None:
        pass

    def waiting(self, label: str = "") -> None:
        pass


def permission_policy(yes: bool, note: Callable[[str], None]) -> Ask:
    """``--yes`` allows once; a terminal asks; anything else refuses (nobody is there to ask)."""

    def ask(ev: Event) -> str:
        tool = str(ev.data.get("tool", "?"))
        what = f"{tool} {tool_summary(tool, ev.data.get('args'), 200)}"
        if yes:
            note(paint(f"allowed (--yes): {what}", "yellow", sys.stderr))
            return "once"
        if not is_tty(sys.stdin):
            note(f"refused: {what} (stdin is not a terminal; pass --yes to allow)")
            return "reject"
        return prompt_permission(what)

    return ask


def prompt_permission(what: str) -> str:
    sys.stderr.write(
        paint("permission: ", "bold yellow", sys.stderr)
        + f"{what}\nAllow? [y]es, [n]o, [a]lways for this session: "
    )
    sys.stderr.flush()
    while True:
        answer = sys.stdin.readline()
        if not answer:
            return "reject"
        choice = answer.strip().lower()
        if choice in ("y", "yes"):
            return "once"
        if choice in ("a", "always"):
            return "always"
        if choice in ("n", "no"):
            return "reject"
        sys.stderr.write("Please answer y, n or a: ")
        sys.stderr.flush()


def run_turn(
    client: Client, session_id: str, text: str, render: TextRenderer | JsonRenderer, ask: Ask
) -> str:
    """Send ``text``, render the stream, answer permissions; return the final status.

    A KeyboardInterrupt aborts the turn on the daemon before it propagates, so Ctrl-C never
    leaves an agent running unattended.
    """
    try:
        render.waiting()
        for ev in client.sessions.message(session_id, text=text):
            render.event(ev)
            if ev.type == "permission":
                answer = ask(ev)
                client.permissions.respond(session_id, str(ev.data.get("id")), answer)
                render.waiting(f"running {ev.data.get('tool', 'the tool')}")
            elif ev.type == "complete":
                return str(ev.data.get("status", "error"))
    except KeyboardInterrupt:
        if isinstance(render, TextRenderer):
            render.spinner.stop()
        render.end_line()
        abort_quietly(client, session_id)
        render.note(paint("aborted", "yellow", sys.stderr))
        raise
    finally:
        if isinstance(render, TextRenderer):
            render.spinner.stop()
    raise ProtocolError("the event stream ended before the turn completed")


def abort_quietly(client: Client, session_id: str) -> None:
    try:
        client.sessions.abort(session_id)
    except Exception as exc:  # the daemon may be gone; Ctrl-C must still exit
        sys.stderr.write(f"could not abort the turn: {exc}\n")

"""The pieces of the conversation and the dialogs of ``opencode tui``."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, Label, ListItem, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from opencode_cli.cli._turn import tool_summary

#: Characters of a tool's output kept in its block (the daemon caps outputs too).
TOOL_OUTPUT_CHARS = 20_000


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage {
        margin: 1 0 0 0;
        padding: 0 1;
        border-left: thick $accent;
        background: $boost;
    }
    """

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False)
        self.text = text


class AssistantText(Markdown):
    """One assistant text block: Markdown (code fenced and highlighted), grown as deltas come."""

    DEFAULT_CSS = """
    AssistantText {
        margin: 1 0 0 0;
        padding: 0 1;
    }
    """

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.text = text

    async def add(self, delta: str) -> None:
        self.text += delta
        await self.append(delta)

    async def replace(self, text: str) -> None:
        if text != self.text:
            self.text = text
            await self.update(text)


class ToolBlock(Collapsible):
    """A tool call: its title line, and its output folded inside (expand with Enter/click)."""

    DEFAULT_CSS = """
    ToolBlock { margin: 1 0 0 0; border: none; padding: 0; background: $surface; }
    ToolBlock.failed CollapsibleTitle { color: $error; }
    ToolBlock .tool-output { padding: 0 1; color: $text-muted; }
    """

    def __init__(self, call_id: str, tool: str, args: Any) -> None:
        self.call_id = call_id
        self.tool = tool
        self.summary = tool_summary(tool, args, 80)
        self.output = ""
        self.error = False
        self.done = False
        self.body = Static("running…", markup=False, classes="tool-output")
        super().__init__(self.body, title=self._heading("…"), collapsed=True)

    def _heading(self, mark: str) -> str:
        # Content, not str: a str title is parsed as markup and `ls [ab]*` is not markup.
        return Content(f"{mark} {self.tool} {self.summary}")  # type: ignore[return-value]

    def finish(self, output: str, error: bool) -> None:
        self.output, self.error, self.done = output, error, True
        text = output if len(output) <= TOOL_OUTPUT_CHARS else output[:TOOL_OUTPUT_CHARS] + "\n…"
        self.body.update(text or "(no output)")
        self.title = self._heading("✗" if error else "✓")
        self.set_class(error, "failed")


class Notice(Static):
    """A line in the conversation that is not a message: errors, aborts, turn summaries."""

    DEFAULT_CSS = """
    Notice { margin: 1 0 0 0; padding: 0 1; color: $text-muted; }
    Notice.error { color: $error; }
    """

    def __init__(self, text: str, *, error: bool = False) -> None:
        super().__init__(text, markup=False, classes="error" if error else "")
        self.text = text


class SessionItem(ListItem):
    def __init__(self, session_id: str, label: str) -> None:
        super().__init__(Label(label, markup=False))
        self.session_id = session_id
        self.label = label


class PermissionScreen(ModalScreen[str]):
    """once / always / reject for one permission request."""

    DEFAULT_CSS = """
    PermissionScreen { align: center middle; }
    PermissionScreen #dialog {
        width: 80; height: auto; padding: 1 2;
        border: thick $warning; background: $surface;
    }
    PermissionScreen #what { margin: 1 0; color: $text; }
    PermissionScreen #buttons { height: auto; }
    PermissionScreen Button { margin: 0 1 0 0; }
    """
    BINDINGS = [
        Binding("y", "choose('once')", "Once"),
        Binding("a", "choose('always')", "Always"),
        Binding("n", "choose('reject')", "Reject"),
        Binding("escape", "choose('reject')", "Reject"),
    ]

    def __init__(self, permission_id: str, tool: str, args: Any) -> None:
        super().__init__()
        self.permission_id = permission_id
        self.tool = tool
        self.args = args

    def compose(self) -> ComposeResult:
        what = json.dumps(self.args, indent=2, ensure_ascii=False) if self.args else ""
        with Vertical(id="dialog"):
            yield Label(
                f"Allow {self.tool}: {tool_summary(self.tool, self.args, 60)}?", markup=False
            )
            yield Static(what, id="what", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Once (y)", id="once", variant="primary")
                yield Button("Always (a)", id="always", variant="warning")
                yield Button("Reject (n)", id="reject", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(str(event.button.id))

    def action_choose(self, answer: str) -> None:
        self.dismiss(answer)


class ModelPicker(ModalScreen["str | None"]):
    """Pick PROVIDER/MODEL for new sessions from ``GET /models``."""

    DEFAULT_CSS = """
    ModelPicker { align: center middle; }
    ModelPicker OptionList { width: 90; height: 70%; border: thick $accent; }
    """
    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, models: list[tuple[str, str]], current: str | None) -> None:
        super().__init__()
        self.models = models
        self.current = current

    def compose(self) -> ComposeResult:
        options = [Option(label, id=ref) for ref, label in self.models]
        picker = OptionList(*options, id="models")
        picker.border_title = "Model for new sessions"
        yield picker

    def on_mount(self) -> None:
        picker = self.query_one(OptionList)
        refs = [ref for ref, _ in self.models]
        if self.current in refs:
            picker.highlighted = refs.index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen #dialog {
        width: 60; height: auto; padding: 1 2; border: thick $error; background: $surface;
    }
    ConfirmScreen #buttons { height: auto; margin: 1 0 0 0; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, markup=False)
            with Horizontal(id="buttons"):
                yield Button("Delete (y)", id="yes", variant="error")
                yield Button("Keep (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class DiffScreen(ModalScreen[None]):
    """The session's changes, when the daemon serves ``GET /sessions/:id/diff``."""

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    DiffScreen VerticalScroll {
        width: 90%; height: 90%; border: thick $accent; background: $surface;
    }
    """
    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", "Close")]

    def __init__(self, diff: str) -> None:
        super().__init__()
        self.diff = diff

    def compose(self) -> ComposeResult:
        from rich.syntax import Syntax

        with VerticalScroll() as scroll:
            scroll.border_title = "Changes in this session (Esc closes)"
            yield Static(Syntax(self.diff or "(no changes)", "diff", word_wrap=True))

    def action_close(self) -> None:
        self.dismiss(None)

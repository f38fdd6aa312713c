"""The system prompt: where the agent works, what it may use, and the project's own rules.

Built once per turn (the date can change between turns) and kept byte-identical across the
steps of a turn, so the provider's prompt cache keeps hitting.
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

from ..tools import tool_specs

AGENTS_FILE = "AGENTS.md"
AGENTS_MAX_CHARS = 64 * 1024

INTRO = """\
You are opencode, a coding agent working on the user's machine through tools.
Work in small, verifiable steps: read before you edit, keep edits minimal, and run the
project's own commands (tests, linters) with bash to check your work when that makes sense.
Paths are relative to the working directory (absolute paths must stay inside it).
When you are done, answer briefly with what you changed and anything left to do."""


def _platform() -> str:
    return f"{platform.system()} {platform.release()} ({platform.machine()})"


def read_agents_file(root: Path) -> str | None:
    """The project's AGENTS.md, capped; None when there is none or it cannot be read."""
    path = root / AGENTS_FILE
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    if len(text) > AGENTS_MAX_CHARS:
        text = text[:AGENTS_MAX_CHARS] + f"\n[{AGENTS_FILE} cut at {AGENTS_MAX_CHARS} characters]"
    return text.strip() or None


def system_prompt(directory: Path, project_root: Path, today: datetime.date | None = None) -> str:
    today = today or datetime.date.today()
    tools = "\n".join(f"- {name}: {desc.splitlines()[0]}" for name, desc, _ in tool_specs())
    parts = [
        INTRO,
        "<env>\n"
        f"Working directory: {directory}\n"
        f"Platform: {_platform()}\n"
        f"Date: {today.isoformat()}\n"
        "</env>",
        f"Tools you can call:\n{tools}",
    ]
    for root in dict.fromkeys([project_root, directory]):
        agents = read_agents_file(root)
        if agents:
            parts.append(
                f"Instructions from {root / AGENTS_FILE} (the project's rules; follow them):\n"
                f"{agents}"
            )
    return "\n\n".join(parts)

"""Capping what a tool sends back to the model.

A model's context is finite and costs money, so every result is cut to a fixed budget; the
cut is announced in the text, so the model knows to narrow its request rather than assume it
saw everything.
"""

from __future__ import annotations

MAX_CHARS = 50_000
MAX_LINES = 2_000
# Tools that page their own output (read) fill MAX_LINES with content and add a note on
# where to resume; the final cap leaves room for such notes so it does not cut them off.
NOTE_LINES = 20


def cap_head(text: str, max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES) -> str:
    """Keep the beginning of `text` within both budgets, noting what was cut."""
    lines = text.splitlines(keepends=True)
    if len(text) <= max_chars and len(lines) <= max_lines:
        return text
    kept = "".join(lines[:max_lines])[:max_chars]
    shown = kept.count("\n") + (0 if kept.endswith("\n") or not kept else 1)
    note = (
        f"\n[output truncated: showing the first {len(kept):,} of {len(text):,} characters"
        f" ({shown:,} of {len(lines):,} lines)]"
    )
    return kept.rstrip("\n") + note


def cap_middle(text: str, max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES) -> str:
    """Keep the beginning and the end of `text` within both budgets, noting the gap.

    Used for command output, where the end (the error, the summary) matters as much as the
    start.
    """
    lines = text.splitlines(keepends=True)
    if len(text) <= max_chars and len(lines) <= max_lines:
        return text
    half_lines = max_lines // 2
    half_chars = max_chars // 2
    head = "".join(lines[:half_lines])[:half_chars]
    tail = "".join(lines[-half_lines:])[-half_chars:]
    omitted = len(text) - len(head) - len(tail)
    return f"{head.rstrip(chr(10))}\n[... {omitted:,} characters omitted ...]\n{tail}"

"""Terminal output: colour only on a terminal (and never with NO_COLOR), stable text otherwise.

Listings print aligned columns with a header on a terminal, and tab-separated rows without a
header when piped, so ``opencode sessions | cut -f1`` works (the ``gh`` convention).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream: TextIO) -> bool:
    """https://no-color.org: any non-empty NO_COLOR disables colour."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_tty(stream)


def paint(text: str, style: str, stream: TextIO) -> str:
    if not use_color(stream):
        return text
    codes = ";".join(_CODES[s] for s in style.split())
    return f"\x1b[{codes}m{text}\x1b[0m"


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def error(message: str) -> None:
    err(paint("error:", "bold red", sys.stderr) + " " + message)


def warn(message: str) -> None:
    err(paint("warning:", "bold yellow", sys.stderr) + " " + message)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if not is_tty(sys.stdout):
        for row in cells:
            out("\t".join(row))
        return
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    head = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out(paint(head, "bold", sys.stdout))
    for row in cells:
        out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def when(stamp: Any) -> str:
    """Unix seconds as local ``YYYY-MM-DD HH:MM``; other values pass through."""
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
    return "" if stamp is None else str(stamp)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def confirm(question: str) -> bool:
    """Ask a yes/no question on the terminal (stderr); anything but y/yes is no."""
    sys.stderr.write(paint(question, "bold", sys.stderr) + " [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def short_text(text: str, limit: int = 300) -> str:
    """An error text fit for one line: HTML pages reduced to their words, long text cut."""
    import re

    if re.search(r"<\s*(!doctype|html|head|body)\b", text, re.IGNORECASE):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        body = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.IGNORECASE | re.DOTALL)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", body)
        text = f"{' '.join(text.split())} (HTML error page)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Spinner:
    """``⠋ waiting for the model… 3s`` on a terminal's stderr until stopped; nothing elsewhere.

    A thread redraws it; ``stop`` clears the line so the next output starts clean.
    """

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream: TextIO | None = None) -> None:
        import threading

        self.stream = stream or sys.stderr
        self.enabled = use_color(self.stream)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._label = ""
        self._since = 0.0
        self._shown = False

    def start(self, label: str = "waiting for the model", *, now: bool = False) -> None:
        """Spin with `label`; the first frame comes after a short pause, or at once (`now`)."""
        import threading

        if not self.enabled:
            return
        with self._lock:
            self._label, self._since = label, time.monotonic()
            if now:
                self._draw(0)
            if self._thread is None:
                self._wake.clear()
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._wake.set()
        if thread is not None:
            thread.join()
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def _run(self) -> None:
        frame = 0
        while not self._wake.wait(0.1 if frame else 0.3):  # no flicker for instant answers
            with self._lock:
                if self._wake.is_set():
                    return
                self._draw(frame)
            frame += 1

    def _draw(self, frame: int) -> None:
        """One frame (the caller holds the lock)."""
        waited = int(time.monotonic() - self._since)
        text = f"{self.FRAMES[frame % len(self.FRAMES)]} {self._label}… {waited}s"
        self.stream.write("\r\x1b[K" + paint(text, "dim", self.stream))
        self.stream.flush()
        self._shown = True

"""Reading the two event wire formats: NDJSON lines and Server-Sent Events (contract section 5)."""

from __future__ import annotations

import json

from ._exceptions import ProtocolError
from ._models import Event


def parse_ndjson(line: str) -> Event | None:
    """One NDJSON line ``{"type", "seq", "data"}``; blank lines (heartbeats) give None."""
    line = line.strip()
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        raise ProtocolError(f"bad NDJSON line from daemon: {line[:200]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise ProtocolError(f"NDJSON line without a type: {line[:200]!r}")
    data = doc.get("data")
    seq = doc.get("seq")
    return Event(
        type=doc["type"],
        seq=seq if isinstance(seq, int) else None,
        data=data if isinstance(data, dict) else {},
        raw=line,
    )


class SSEParser:
    """Feed it lines (without the newline); it returns an Event when a blank line ends one.

    Follows the SSE rules that matter here: ``id``, ``event``, multi-line ``data``, ``retry``, and
    ``:`` comments (heartbeats) ignored.
    """

    def __init__(self) -> None:
        self._id: str | None = None
        self._event: str | None = None
        self._data: list[str] = []
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            self._id = value
        elif field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = None
            return None
        raw = "\n".join(self._data)
        kind = self._event or "message"
        seq_text, self._event, self._data = self._id, None, []
        try:
            data = json.loads(raw)
        except ValueError:
            raise ProtocolError(f"bad SSE data from daemon: {raw[:200]!r}") from None
        seq = int(seq_text) if seq_text and seq_text.isdigit() else None
        return Event(type=kind, seq=seq, data=data if isinstance(data, dict) else {}, raw=raw)

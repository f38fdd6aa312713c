"""Record types for what the daemon returns.

Parsing is lenient on purpose: fields this version does not know are ignored (but kept in
``raw``), optional fields may be missing, so a newer daemon does not break an older client. Only a
missing identity field (``id``, ``type``…) is a protocol error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from ._exceptions import ProtocolError

T = TypeVar("T")

_raw = attrs.field(factory=dict, eq=False, repr=False)


def build(cls: type[T], data: Any) -> T:
    """Make a ``cls`` from a JSON object, keeping the object itself in ``raw``."""
    if not isinstance(data, Mapping):
        raise ProtocolError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in attrs.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in data.items() if k in names and k != "raw"}
    try:
        return cls(**kwargs, raw=dict(data))  # type: ignore[call-arg]
    except TypeError as exc:
        raise ProtocolError(f"bad {cls.__name__} from daemon: {exc}") from None


def build_list(cls: type[T], data: Any) -> list[T]:
    if not isinstance(data, list):
        raise ProtocolError(f"expected a JSON array of {cls.__name__}, got {type(data).__name__}")
    return [build(cls, item) for item in data]


@attrs.frozen
class Health:
    status: str
    version: str | None = None
    uptime: float | None = None
    sessions_running: int | None = None
    database: Any = None
    endpoints: dict[str, str | None] = attrs.field(factory=dict)
    raw: dict[str, Any] = _raw


@attrs.frozen
class Session:
    id: str
    created: int | None = None
    updated: int | None = None
    provider: str | None = None
    model: str | None = None
    project: str | None = None
    directory: str | None = None
    title: str | None = None
    status: str | None = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class Project:
    id: str
    name: str | None = None
    path: str | None = None
    created: int | None = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class FileEntry:
    name: str
    path: str | None = None
    type: str | None = None
    size: int | None = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class Part:
    """One part of a stored message: ``text`` parts carry ``text``, ``tool`` parts the rest."""

    type: str
    text: str | None = None
    id: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    output: str | None = None
    error: bool | None = None
    status: str | None = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class Message:
    id: str
    role: str
    created: int | None = None
    parts: list[Part] = attrs.field(factory=list, converter=lambda ps: build_list(Part, ps))
    raw: dict[str, Any] = _raw

    @property
    def text(self) -> str:
        return "".join(p.text or "" for p in self.parts if p.type == "text")


@attrs.frozen
class Provider:
    id: str
    name: str | None = None
    models: list[Any] = attrs.field(factory=list)
    raw: dict[str, Any] = _raw


@attrs.frozen
class Model:
    id: str
    provider: str | None = None
    name: str | None = None
    context: int | None = None
    price: Any = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class Permission:
    id: str
    tool: str
    args: dict[str, Any] = attrs.field(factory=dict)
    created: int | None = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class Accepted:
    """The 202 answer to an ``async`` message: the turn runs on; follow it with ``events``."""

    message_id: str
    seq: int | None = None
    raw: dict[str, Any] = _raw


@attrs.frozen
class Event:
    """One event of a session's log (contract section 5).

    ``raw`` is the line exactly as the daemon sent it, so tools can pass it on untouched.
    """

    type: str
    seq: int | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    raw: str = attrs.field(default="", eq=False, repr=False)

    @property
    def is_complete(self) -> bool:
        return self.type == "complete"

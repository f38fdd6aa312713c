"""Reading request bodies and query strings into attrs records, or a clear 400."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from quart import request

from ..errors import InvalidRequest
from ..wire import structure

T = TypeVar("T")


async def json_body(cls: type[T], *, empty_ok: bool = False) -> T:
    """The request body as cls. Malformed JSON, wrong types and unknown fields are 400s."""
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        if empty_ok:
            return structure({}, cls)
        raise InvalidRequest("request body is empty; send a JSON object", {"field": "(body)"})
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", {"field": "(body)"}
        ) from None
    return structure(data, cls)


def query(cls: type[T], *, allow: tuple[str, ...] = ("token",)) -> T:
    """The query string as cls. Values arrive as strings; int fields are parsed here."""
    fields = {a.name: a.type for a in cls.__attrs_attrs__}  # type: ignore[attr-defined]
    data: dict[str, Any] = {}
    for key in request.args:
        if key in allow:
            continue
        if key not in fields:
            raise InvalidRequest(f"unknown query parameter {key!r}", {"field": key})
        value = request.args[key]
        if "int" in str(fields[key]):
            try:
                data[key] = int(value)
            except ValueError:
                raise InvalidRequest(
                    f"query parameter {key!r} must be an integer, got {value!r}", {"field": key}
                ) from None
        else:
            data[key] = value
    return structure(data, cls, what="query")

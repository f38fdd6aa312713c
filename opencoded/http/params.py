"""Reading request bodies and query strings into attrs records, or a clear 400."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from quart import request

from ..errors import InvalidRequest, UnsupportedMediaType
from ..wire import check_json, structure

T = TypeVar("T")


async def json_body(cls: type[T], *, empty_ok: bool = False) -> T:
    """The request body as cls. Malformed JSON, wrong types and unknown fields are 400s.

    A body must say `Content-Type: application/json` (415 otherwise): a cross-site HTML
    form can POST `text/plain` without a CORS preflight, so only JSON is ever parsed.
    """
    raw = await request.get_data(as_text=False)
    if not raw and empty_ok and request.mimetype in ("", "application/json"):
        return structure({}, cls)
    if request.mimetype != "application/json":
        got = request.headers.get("Content-Type") or "none"
        raise UnsupportedMediaType(
            f"send the body as Content-Type: application/json (got {got})",
            {"field": "Content-Type"},
        )
    if not raw.strip():
        if empty_ok:
            return structure({}, cls)
        raise InvalidRequest("request body is empty; send a JSON object", {"field": "(body)"})
    return structure(parse_json(raw, "(body)"), cls)


def parse_json(raw: str | bytes, field: str) -> Any:
    """Decode a JSON text from a client: one 400 for every way it can be bad."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{field} is not valid JSON: {exc}", {"field": field}) from None
    except RecursionError:
        raise InvalidRequest(f"{field}: JSON nested too deeply", {"field": field}) from None
    check_json(data, what=field)
    return data


def parse_uint(value: str, field: str) -> int:
    """A non-negative integer in plain ASCII digits: not " 5", "+5", "1_0" or other scripts."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidRequest(
            f"{field} must be a non-negative integer in ASCII digits, got {value!r}",
            {"field": field},
        )
    return int(value)


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
            data[key] = parse_uint(value, key)
        else:
            data[key] = value
    return structure(data, cls, what="query")

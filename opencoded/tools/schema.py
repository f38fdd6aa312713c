"""Checking a model's tool arguments against the tool's input schema.

Models get arguments wrong (a missing key, a number as a string); the check turns that into
a message naming the field, which the model can act on, instead of a crash deep in a tool.
Only the JSON Schema subset our tools use is supported: an object of properties with
`type`, `required`, `minimum`/`maximum` and `additionalProperties: false` (arrays and
objects are checked for their type only; a tool checks their items itself).
"""

from __future__ import annotations

from typing import Any

from opencoded.tools.base import ToolError

_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "a boolean", "array": "an array", "object": "an object"}  # fmt: skip


def _coerce(field: str, value: Any, spec: dict[str, Any]) -> Any:
    kind = spec.get("type")
    ok = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }.get(kind, True)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True  # some models send 10.0 for 10
    if not ok:
        raise ToolError(
            f"invalid argument {field!r}: expected {_TYPE_NAMES[kind]}, "
            f"got {type(value).__name__} {value!r:.80}"
        )
    if "minimum" in spec and value < spec["minimum"]:
        raise ToolError(f"invalid argument {field!r}: must be at least {spec['minimum']}")
    if "maximum" in spec and value > spec["maximum"]:
        raise ToolError(f"invalid argument {field!r}: must be at most {spec['maximum']}")
    return value


def validate_args(schema: dict[str, Any], args: Any) -> dict[str, Any]:
    """Return `args` checked (and lightly normalised) against `schema`, or raise ToolError."""
    if not isinstance(args, dict):
        raise ToolError(f"arguments must be a JSON object, got {type(args).__name__}")
    props: dict[str, Any] = schema.get("properties", {})
    missing = [name for name in schema.get("required", []) if args.get(name) is None]
    if missing:
        raise ToolError(f"missing required argument(s): {', '.join(missing)}")
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(args) - set(props))
        if unknown:
            raise ToolError(
                f"unknown argument(s): {', '.join(unknown)}; expected: {', '.join(props)}"
            )
    out: dict[str, Any] = {}
    for name, value in args.items():
        if value is None:  # an explicit null for an optional argument means "default"
            continue
        out[name] = _coerce(name, value, props.get(name, {}))
    return out

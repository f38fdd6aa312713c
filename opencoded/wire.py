"""The one cattrs converter for everything that crosses the wire or the config file.

cattrs is lax by default (it turns "false" into True and "abc" into a list of letters),
which is wrong for an API that must name the offending field. So scalar and list hooks
here check types strictly; they are registered before any class hook is generated,
because cattrs bakes the hooks of member types into a class hook when it builds it.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, get_args

import cattrs
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
from cattrs.preconf.json import make_converter

from .errors import InvalidRequest

T = TypeVar("T")


def _strict(expected: type, name: str):
    def hook(value: Any, _type: Any) -> Any:
        # bool is an int subclass; True is never a valid int or float here.
        if isinstance(value, bool) and expected is not bool:
            raise TypeError(f"expected {name}, got bool")
        if not isinstance(value, expected):
            raise TypeError(f"expected {name}, got {_json_type(value)}")
        return value

    return hook


def _json_type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _strict_float(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected number, got {_json_type(value)}")
    return float(value)


def _list_factory(type_: Any, conv: cattrs.Converter):
    inner = list_structure_factory(type_, conv)

    def hook(value: Any, t: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected array, got {_json_type(value)}")
        return inner(value, t)

    return hook


def _dict_factory(type_: Any, conv: cattrs.Converter):
    inner = mapping_structure_factory(type_, conv) if get_args(type_) else None

    def hook(value: Any, t: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected object, got {_json_type(value)}")
        return inner(value, t) if inner is not None else dict(value)

    return hook


def make_wire_converter() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "string"))
    conv.register_structure_hook(int, _strict(int, "integer"))
    conv.register_structure_hook(bool, _strict(bool, "boolean"))
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook_factory(is_sequence, _list_factory)
    conv.register_structure_hook_factory(is_mapping, _dict_factory)
    return conv


converter = make_wire_converter()

_PATH_RE = re.compile(r" @ \$\.?(.*)$")


_LITERAL_RE = re.compile(r"^(.*) not in literal typing\.Literal\[(.*)\]$")


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return "unknown field(s) " + ", ".join(sorted(exc.extra_fields))
    if literal := _LITERAL_RE.match(str(exc)):
        return f"must be one of {literal.group(2)}, got {literal.group(1)!r}"
    if isinstance(exc, TypeError) and str(exc).startswith("expected"):
        return str(exc)
    if type(exc) is ValueError:  # a record's own validator: its text is the explanation
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def describe(exc: Exception) -> list[tuple[str, str]]:
    """(field path, message) pairs for a structuring error, paths like `parts[0].text`."""
    out = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format):
        match = _PATH_RE.search(line)
        field = match.group(1) if match else ""
        message = line[: match.start()] if match else line
        if message.startswith("unknown field(s) "):
            names = message.removeprefix("unknown field(s) ")
            field = f"{field}.{names}" if field else names
        out.append((field or "(body)", message))
    return out


def structure(data: Any, cls: type[T], *, what: str = "body") -> T:
    """Structure JSON data into cls, or raise InvalidRequest naming the bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"{what} must be a JSON object",
            {"field": "(body)", "errors": [f"{what}: not an object"]},
        )
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises ClassValidationError and friends
        problems = describe(exc)
        field, message = problems[0]
        raise InvalidRequest(
            f"invalid {field}: {message}",
            {"field": field, "errors": [f"{f}: {m}" for f, m in problems]},
        ) from None


# Deeper than any body the API defines; a bound keeps recursive code (cattrs, json.dumps,
# storage) far from Python's recursion limit.
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json(data: Any, *, what: str = "(body)") -> None:
    """Refuse decoded JSON the daemon must not keep: lone surrogates and deep nesting.

    `json.loads` accepts `"\\ud800"`, but such a string cannot be encoded as UTF-8, so
    stored it would break every later use (a provider request, a log line). Walks the
    value without recursion; the InvalidRequest names the field, as `parts[0].text`.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path or what)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise InvalidRequest(
                f"JSON nested deeper than {MAX_DEPTH} levels", {"field": path or what}
            )
        if isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
            continue
        for key, item in value.items():
            _check_text(key, path or what)
            stack.append((item, f"{path}.{key}" if path else key, depth + 1))


def _check_text(text: str, field: str) -> None:
    if _SURROGATE.search(text):
        raise InvalidRequest(
            f"invalid {field}: contains a lone surrogate (\\ud800-\\udfff), not valid Unicode",
            {"field": field},
        )


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)

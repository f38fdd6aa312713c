"""Between MCP and the agent: tool names, input schemas, results.

Kept free of the `mcp` SDK's imports (it costs a second to import): results are read by
their attributes, as the SDK's pydantic models expose them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

# Anthropic and OpenAI both accept ^[a-zA-Z0-9_-]{1,64}$ as a tool name.
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_DESCRIPTION = 4000


@attrs.frozen
class McpTool:
    name: str  # offered to the model: SERVER_TOOL
    remote: str  # the server's own name for it
    description: str
    input_schema: dict[str, Any]


def exposed_name(server: str, tool: str) -> str:
    """`SERVER_TOOL`, with characters the model APIs refuse replaced by `_`."""
    return _UNSAFE.sub("_", f"{server}_{tool}")[:MAX_NAME]


def check_schema(schema: Any) -> dict[str, Any]:
    """The tool's input schema as the model APIs want it (an object schema), or ValueError."""
    if not isinstance(schema, dict):
        raise ValueError(f"input schema is not a JSON object: {json.dumps(schema)[:80]}")
    kind = schema.get("type", "object")
    if kind != "object":
        raise ValueError(f"input schema has type {kind!r}; tools take an object")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise ValueError("input schema 'properties' is not an object")
    return {**schema, "type": "object"}


def tools_from_listing(server: str, listed: list[Any]) -> tuple[list[McpTool], list[str]]:
    """The usable tools of one server, and a note per tool left out (bad schema, clash)."""
    tools: dict[str, McpTool] = {}
    skipped: list[str] = []
    for tool in listed:
        name = exposed_name(server, tool.name)
        try:
            schema = check_schema(tool.input_schema)
        except ValueError as exc:
            skipped.append(f"{tool.name}: {exc}")
            continue
        if name in tools:
            skipped.append(f"{tool.name}: its name {name!r} clashes with {tools[name].remote!r}")
            continue
        description = (tool.description or tool.title or tool.name)[:MAX_DESCRIPTION]
        tools[name] = McpTool(name, tool.name, description, schema)
    return list(tools.values()), skipped


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(block.data) * 3 // 4  # base64
        return f"[{kind} {block.mime_type}, about {size} bytes: not shown]"
    if kind == "resource_link":
        return f"[resource {block.name}: {block.uri}]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return f"[resource {resource.uri}]\n{text}"
        return f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'})]"
    return f"[{kind} content]"


def result_text(result: Any) -> tuple[str, bool]:
    """(text for the model, is_error) of a CallToolResult."""
    parts = [_block_text(block) for block in result.content or ()]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts) or "(no output)", bool(result.is_error)

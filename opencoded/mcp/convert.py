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
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")  # what both APIs take
MAX_IMAGE_BASE64 = 5 * 1024 * 1024 * 4 // 3  # Anthropic's 5 MB per image
MAX_IMAGES = 8


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


def _image(block: Any) -> tuple[str, str] | None:
    """(media type, base64) of an image block the model APIs take, or None."""
    if getattr(block, "type", None) != "image" or block.mime_type not in IMAGE_TYPES:
        return None
    if len(block.data) > MAX_IMAGE_BASE64:
        return None
    return block.mime_type, block.data


def _block_text(block: Any, shown: bool) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(block.data) * 3 // 4  # base64
        return f"[{kind} {block.mime_type}, about {size} bytes{'' if shown else ': not shown'}]"
    if kind == "resource_link":
        return f"[resource {block.name}: {block.uri}]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return f"[resource {resource.uri}]\n{text}"
        return f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'})]"
    return f"[{kind} content]"


def convert_result(result: Any) -> tuple[str, bool, tuple[tuple[str, str], ...]]:
    """(text, is_error, images) of a CallToolResult. The text names every image; the
    images (PNG, JPEG, GIF, WebP up to 5 MB, at most MAX_IMAGES) reach models that take them."""
    parts, images = [], []
    for block in result.content or ():
        image = _image(block) if len(images) < MAX_IMAGES else None
        if image is not None:
            images.append(image)
        parts.append(_block_text(block, shown=image is not None))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts) or "(no output)", bool(result.is_error), tuple(images)

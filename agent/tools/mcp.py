"""Tools an MCP server offers, as agent tools: `mcp__SERVER__TOOL`, run by the server inside the sandbox."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ConfigDict

from agent.mcp_client import McpClient, McpError, McpToolInfo, tool_name
from agent.models.base import ToolSpec
from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput


class McpArgs(ToolArgs):
    """Whatever object the model sends: the server validates against its own schema."""

    model_config = ConfigDict(extra="allow")


class McpTool(Tool):
    Args = McpArgs

    def __init__(self, client: McpClient, info: McpToolInfo) -> None:
        self.client, self.info = client, info
        self.name = tool_name(client.spec.name, info.name)  # type: ignore[misc]
        self.description = f"[MCP server {client.spec.name}] {info.description}".strip()  # type: ignore[misc]
        self.read_only = info.read_only  # type: ignore[misc]

    def spec(self) -> ToolSpec:
        schema = dict(self.info.input_schema)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        return ToolSpec(self.name, self.description, schema)

    async def run(self, ctx: ToolContext, args: Any) -> ToolOutput:
        arguments = dict(args.model_extra or {})
        missing = [k for k in self.info.input_schema.get("required") or [] if k not in arguments]
        if missing:
            return ToolOutput(f"invalid arguments for {self.name}: missing {', '.join(map(str, missing))}",
                              is_error=True)
        try:
            result = await self.client.call(self.info.name, arguments)
        except McpError as exc:
            return ToolOutput(str(exc), is_error=True)
        return ToolOutput(render(result), is_error=result.get("isError") is True)


def render(result: dict[str, Any]) -> str:
    """The result's content as text for the model (non-text parts named, not dropped silently)."""
    parts: list[str] = []
    for item in result.get("content") or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "text":
            parts.append(str(item.get("text", "")))
        elif kind == "resource" and isinstance(item.get("resource"), dict):
            res = item["resource"]
            parts.append(str(res.get("text")) if "text" in res else f"[resource {res.get('uri', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource link {item.get('uri', '')}]")
        else:
            parts.append(f"[{kind} content ({item.get('mimeType', 'unknown type')}) not shown]")
    if not parts and "structuredContent" in result:
        parts.append(json.dumps(result["structuredContent"], ensure_ascii=False))
    return "\n".join(parts) if parts else "(no content)"


def mcp_tools(clients: list[McpClient]) -> list[McpTool]:
    return [McpTool(client, info) for client in clients for info in client.tools]

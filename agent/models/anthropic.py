"""Anthropic Messages, streamed (`POST {base_url}/v1/messages`).

Anthropic wants strictly alternating roles, tool results as `tool_result`
blocks at the front of the next user message, and thinking blocks sent back
with their signatures; the history translation below takes care of all three.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from httpx_sse import ServerSentEvent

from agent.items import AssistantMessage, Summary, ToolCall, ToolResult, UserMessage
from agent.models.base import (
    Completed,
    ContextOverflowError,
    ModelRequest,
    ReasoningDelta,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallStarted,
    Usage,
)
from agent.models.http import HTTPModelClient
from agent.models.retry import RetryableError, classify_http_error, looks_like_overflow

PROVIDER = "anthropic"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 8192

STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn", "stop_sequence": "end_turn", "tool_use": "tool_use", "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens", "refusal": "refusal", "pause_turn": "other",
}
_RETRYABLE_TYPES = {"overloaded_error": "overloaded", "api_error": "server", "rate_limit_error": "rate_limit",
                    "timeout_error": "server"}
_STATUS_OF_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                   "not_found_error": 404, "request_too_large": 413}
_BAD_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(call_id: str) -> str:
    """Anthropic ids must match ^[a-zA-Z0-9_-]+$; ids from other providers may not."""
    return _BAD_ID.sub("_", call_id) or "toolu_missing"


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def anthropic_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """History → alternating Anthropic messages (consecutive same-role messages merged)."""
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for item in request.items:
        if isinstance(item, UserMessage | Summary):
            if item.text:
                add("user", [{"type": "text", "text": item.text}])
        elif isinstance(item, AssistantMessage):
            blocks = [dict(e["block"]) for e in item.opaque
                      if e.get("provider") == PROVIDER and isinstance(e.get("block"), dict)]
            if item.text:
                blocks.append({"type": "text", "text": item.text})
            blocks += [{"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": _tool_input(c.arguments)}
                       for c in item.tool_calls]
            add("assistant", blocks)
        elif isinstance(item, ToolResult):
            add("user", [{"type": "tool_result", "tool_use_id": _tool_id(item.call_id),
                          "content": item.output or "(no output)", "is_error": item.is_error}])
    for msg in messages:  # tool_result blocks must come first in a user message
        if msg["role"] == "user":
            msg["content"].sort(key=lambda b: b.get("type") != "tool_result")
    return messages


class AnthropicClient(HTTPModelClient):
    """The Messages API client. `thinking` (e.g. {"type": "enabled", "budget_tokens": 4000}) is passed through."""

    provider = "anthropic"
    path = "/v1/messages"

    def __init__(self, *, default_max_tokens: int = DEFAULT_MAX_TOKENS, thinking: dict[str, Any] | None = None,
                 extra_body: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_max_tokens = default_max_tokens
        self.thinking = thinking
        self.extra_body = dict(extra_body or {})

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return err.get("message"), err.get("type")
        return super().error_details(body)

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_output_tokens or self.default_max_tokens,
            "messages": anthropic_messages(request),
            "stream": True,
        }
        if request.system:
            body["system"] = request.system
        if request.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                             for t in request.tools]
        if self.thinking:
            body["thinking"] = self.thinking
        body.update(self.extra_body)
        return body

    async def parse_stream(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        blocks: dict[int, dict[str, Any]] = {}
        order: list[int] = []
        usage = Usage()
        stop: str | None = None
        async for sse in events:
            if not sse.data.strip():
                continue
            ev = self.load(sse.data)
            if not isinstance(ev, dict):
                continue
            kind = ev.get("type") or sse.event
            if kind == "message_start":
                raw = (ev.get("message") or {}).get("usage") or {}
                usage.input_tokens = int(raw.get("input_tokens") or 0) + int(raw.get("cache_creation_input_tokens")
                                                                              or 0)
                usage.cached_input_tokens = int(raw.get("cache_read_input_tokens") or 0)
                usage.output_tokens = int(raw.get("output_tokens") or 0)
            elif kind == "content_block_start":
                index = int(ev.get("index", len(order)))
                block = dict(ev.get("content_block") or {})
                blocks[index] = {"block": block, "parts": []}
                order.append(index)
                if block.get("type") == "tool_use":
                    yield ToolCallStarted(block.get("id") or f"toolu_{index}", block.get("name") or "")
                elif block.get("type") == "text" and block.get("text"):
                    blocks[index]["parts"].append(block["text"])
                    yield TextDelta(block["text"])
            elif kind == "content_block_delta":
                slot = blocks.get(int(ev.get("index", -1)))
                delta = ev.get("delta") or {}
                if slot is None:
                    continue
                dtype = delta.get("type")
                if dtype == "text_delta" and delta.get("text"):
                    slot["parts"].append(delta["text"])
                    yield TextDelta(delta["text"])
                elif dtype == "input_json_delta":
                    slot["parts"].append(delta.get("partial_json") or "")
                elif dtype == "thinking_delta" and delta.get("thinking"):
                    slot["parts"].append(delta["thinking"])
                    yield ReasoningDelta(delta["thinking"])
                elif dtype == "signature_delta":
                    slot["block"]["signature"] = slot["block"].get("signature", "") + (delta.get("signature") or "")
            elif kind == "message_delta":
                stop = (ev.get("delta") or {}).get("stop_reason") or stop
                raw = ev.get("usage") or {}
                if raw.get("output_tokens") is not None:
                    usage.output_tokens = int(raw["output_tokens"])
            elif kind == "message_stop":
                yield self._completed(blocks, order, stop, usage)
                return
            elif kind == "error":
                raise self._stream_error(ev.get("error") or {})
            # ping, content_block_stop and unknown events need nothing
        raise RetryableError("stream", "the stream ended before message_stop")

    @staticmethod
    def _completed(blocks: dict[int, dict[str, Any]], order: list[int], stop: str | None, usage: Usage) -> Completed:
        text: list[str] = []
        calls: list[ToolCall] = []
        opaque: list[dict[str, Any]] = []
        for index in order:
            block, parts = blocks[index]["block"], blocks[index]["parts"]
            btype = block.get("type")
            if btype == "text":
                text.append("".join(parts))
            elif btype == "tool_use":
                joined = "".join(parts).strip()
                if not joined and block.get("input"):
                    joined = json.dumps(block["input"])
                calls.append(ToolCall(id=block.get("id") or f"toolu_{index}", name=block.get("name") or "",
                                      arguments=joined or "{}"))
            elif btype == "thinking":
                opaque.append({"provider": PROVIDER, "block": {"type": "thinking", "thinking": "".join(parts),
                                                               "signature": block.get("signature", "")}})
            elif btype == "redacted_thinking":
                opaque.append({"provider": PROVIDER, "block": block})
        reason = STOP_REASONS.get(stop or "end_turn", "other")
        message = AssistantMessage(text="".join(text), tool_calls=calls, opaque=opaque)
        return Completed(message, reason, usage)

    def _stream_error(self, err: dict[str, Any]) -> Exception:
        etype = str(err.get("type") or "api_error")
        message = str(err.get("message") or etype)
        if looks_like_overflow(message, etype):
            return ContextOverflowError(message)
        if etype in _RETRYABLE_TYPES:
            return RetryableError(_RETRYABLE_TYPES[etype], message)  # type: ignore[arg-type]
        return classify_http_error(_STATUS_OF_TYPE.get(etype, 400), message, {}, code=etype)

"""OpenAI Responses API, streamed (`POST {base_url}/responses`).

Requests are stateless (`store: false`): the whole history goes in `input`
every time. Reasoning items come back with encrypted content; they are kept
in `AssistantMessage.opaque` and sent back verbatim (without their ids, which
a stateless request could not resolve) so reasoning models keep their chain.
"""

from __future__ import annotations

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

PROVIDER = "openai-responses"
REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5", "codex")

_RETRYABLE_CODES = {"server_error", "rate_limit_exceeded", "overloaded", "internal_error", "server_is_overloaded",
                    "slow_down", "timeout"}


def responses_input(request: ModelRequest) -> list[dict[str, Any]]:
    """History → Responses `input` items."""
    items: list[dict[str, Any]] = []
    for item in request.items:
        if isinstance(item, UserMessage | Summary):
            items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": item.text}]})
        elif isinstance(item, AssistantMessage):
            for entry in item.opaque:
                if entry.get("provider") == PROVIDER and isinstance(entry.get("item"), dict):
                    items.append(entry["item"])
            if item.text:
                items.append({"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": item.text}]})
            for call in item.tool_calls:
                items.append({"type": "function_call", "call_id": call.id, "name": call.name,
                              "arguments": call.arguments or "{}"})
        elif isinstance(item, ToolResult):
            items.append({"type": "function_call_output", "call_id": item.call_id, "output": item.output})
    return items


class ResponsesClient(HTTPModelClient):
    """The Responses API client (provider "openai")."""

    provider = "openai"
    path = "/responses"

    def __init__(self, *, reasoning: dict[str, Any] | None = None, extra_body: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reasoning = reasoning
        self.extra_body = dict(extra_body or {})

    def is_reasoning_model(self) -> bool:
        return self.reasoning is not None or self.model.lower().startswith(REASONING_MODEL_PREFIXES)

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": responses_input(request),
            "stream": True,
            "store": False,
        }
        if request.system:
            body["instructions"] = request.system
        if request.tools:
            body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                              "parameters": t.parameters, "strict": False} for t in request.tools]
            body["parallel_tool_calls"] = True
        if request.max_output_tokens:
            body["max_output_tokens"] = request.max_output_tokens
        if self.is_reasoning_model():
            # Without this a stateless request loses the reasoning between turns.
            body["include"] = ["reasoning.encrypted_content"]
        if self.reasoning:  # e.g. {"effort": "high", "summary": "auto"} (summaries need a verified org)
            body["reasoning"] = self.reasoning
        body.update(self.extra_body)
        return body

    async def parse_stream(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        text: list[str] = []
        calls: dict[str, dict[str, Any]] = {}  # item id → {call_id, name, args: [..], done}
        order: list[str] = []
        opaque: list[dict[str, Any]] = []
        refusal = False
        async for sse in events:
            if not sse.data.strip():
                continue
            ev = self.load(sse.data)
            if not isinstance(ev, dict):
                continue
            kind = ev.get("type") or sse.event
            if kind == "response.output_text.delta":
                delta = ev.get("delta") or ""
                if delta:
                    text.append(delta)
                    yield TextDelta(delta)
            elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
                if ev.get("delta"):
                    yield ReasoningDelta(ev["delta"])
            elif kind == "response.refusal.delta":
                refusal = True
                if ev.get("delta"):
                    text.append(ev["delta"])
                    yield TextDelta(ev["delta"])
            elif kind == "response.output_item.added":
                item = ev.get("item") or {}
                if item.get("type") == "function_call":
                    key = item.get("id") or item.get("call_id") or str(ev.get("output_index"))
                    calls[key] = {"call_id": item.get("call_id") or key, "name": item.get("name") or "",
                                  "args": [], "final": None}
                    order.append(key)
                    yield ToolCallStarted(calls[key]["call_id"], calls[key]["name"])
            elif kind == "response.function_call_arguments.delta":
                slot = calls.get(ev.get("item_id") or "")
                if slot is not None and ev.get("delta"):
                    slot["args"].append(ev["delta"])
            elif kind == "response.output_item.done":
                item = ev.get("item") or {}
                itype = item.get("type")
                if itype == "function_call":
                    key = item.get("id") or item.get("call_id") or str(ev.get("output_index"))
                    if key not in calls:
                        calls[key] = {"call_id": item.get("call_id") or key, "name": item.get("name") or "",
                                      "args": [], "final": None}
                        order.append(key)
                        yield ToolCallStarted(calls[key]["call_id"], calls[key]["name"])
                    calls[key]["final"] = item.get("arguments")
                    calls[key]["name"] = item.get("name") or calls[key]["name"]
                elif itype == "reasoning":
                    kept = {k: v for k, v in item.items() if k not in ("id", "status")}
                    opaque.append({"provider": PROVIDER, "item": kept})
                elif itype == "message" and not text:
                    for part in item.get("content") or []:
                        if part.get("type") == "output_text" and part.get("text"):
                            text.append(part["text"])
                        elif part.get("type") == "refusal" and part.get("refusal"):
                            refusal = True
                            text.append(part["refusal"])
            elif kind in ("response.completed", "response.incomplete"):
                response = ev.get("response") or {}
                stop = self._stop_reason(response, bool(calls), refusal)
                tool_calls = [ToolCall(id=calls[k]["call_id"], name=calls[k]["name"],
                                       arguments=(calls[k]["final"] if calls[k]["final"] is not None
                                                  else "".join(calls[k]["args"])).strip() or "{}")
                              for k in order]
                message = AssistantMessage(text="".join(text), tool_calls=tool_calls, opaque=opaque)
                yield Completed(message, stop, _usage(response.get("usage") or {}))
                return
            elif kind == "response.failed":
                raise self._failure((ev.get("response") or {}).get("error") or {})
            elif kind == "error":
                raise self._failure(ev.get("error") if isinstance(ev.get("error"), dict) else ev)
        raise RetryableError("stream", "the stream ended before response.completed")

    @staticmethod
    def _stop_reason(response: dict[str, Any], has_calls: bool, refusal: bool) -> StopReason:
        if response.get("status") == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            return "content_filter" if reason == "content_filter" else "max_tokens"
        if has_calls:
            return "tool_use"
        return "refusal" if refusal else "end_turn"

    def _failure(self, err: dict[str, Any]) -> Exception:
        code = str(err.get("code") or err.get("type") or "")
        message = str(err.get("message") or code or "response failed")
        if looks_like_overflow(message, code):
            return ContextOverflowError(message)
        if code in _RETRYABLE_CODES or not code or any(w in code for w in ("overload", "server", "rate_limit")):
            return RetryableError("rate_limit" if "rate" in code else "server", message)
        return classify_http_error(400, message, {}, code=code)


def _usage(raw: dict[str, Any]) -> Usage:
    details = raw.get("input_tokens_details") or {}
    return Usage(input_tokens=int(raw.get("input_tokens") or 0), output_tokens=int(raw.get("output_tokens") or 0),
                 cached_input_tokens=int(details.get("cached_tokens") or 0))

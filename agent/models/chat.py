"""OpenAI Chat Completions, streamed: OpenAI itself and OpenAI-compatible local servers.

Local servers (Ollama, llama.cpp, vLLM, LM Studio) differ in small ways, so
the parser is lenient: ids and names may be repeated in every tool-call
fragment, arguments may arrive whole or as an object, a tool call may end
with finish_reason "stop", and `[DONE]` may be missing after a finish chunk.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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

FINISH_REASONS: dict[str, StopReason] = {
    "stop": "end_turn", "tool_calls": "tool_use", "function_call": "tool_use", "length": "max_tokens",
    "content_filter": "content_filter", "eos": "end_turn", "eos_token": "end_turn",
}


def chat_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """History → Chat Completions messages."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for item in request.items:
        if isinstance(item, UserMessage | Summary):
            messages.append({"role": "user", "content": item.text})
        elif isinstance(item, AssistantMessage):
            msg: dict[str, Any] = {"role": "assistant", "content": item.text or None}
            if item.tool_calls:
                msg["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                                     for c in item.tool_calls]
            elif msg["content"] is None:
                msg["content"] = ""
            messages.append(msg)
        elif isinstance(item, ToolResult):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return messages


@dataclass
class _CallSlot:
    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)
    announced: bool = False
    generated_id: bool = False


class ChatCompletionsClient(HTTPModelClient):
    """`POST {base_url}/chat/completions` with `stream: true`. No API key needed for local servers."""

    provider = "openai-chat"
    path = "/chat/completions"

    def __init__(self, *, max_tokens_field: str | None = None, extra_body: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # OpenAI's newer models refuse max_tokens; local servers mostly only know max_tokens.
        self.max_tokens_field = max_tokens_field or (
            "max_completion_tokens" if "api.openai.com" in self.base_url else "max_tokens")
        self.extra_body = dict(extra_body or {})

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}} for t in request.tools]
        if request.max_output_tokens:
            body[self.max_tokens_field] = request.max_output_tokens
        body.update(self.extra_body)
        return body

    async def parse_stream(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        text: list[str] = []
        slots: list[_CallSlot] = []
        by_index: dict[int, _CallSlot] = {}
        finish: str | None = None
        usage = Usage()
        done = False
        async for sse in events:
            data = sse.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                done = True
                break
            chunk = self.load(data)
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error"):
                raise self._stream_error(chunk["error"])
            if isinstance(chunk.get("usage"), dict):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    yield ReasoningDelta(reasoning)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    text.append(content)
                    yield TextDelta(content)
                for frag in delta.get("tool_calls") or []:
                    slot = _assemble(frag, slots, by_index)
                    if slot is not None and not slot.announced and slot.name:
                        if not slot.id:
                            slot.id, slot.generated_id = f"call_{uuid.uuid4().hex[:24]}", True
                        slot.announced = True
                        yield ToolCallStarted(slot.id, slot.name)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        if not done and finish is None:
            raise RetryableError("stream", "the stream ended before a finish_reason or [DONE]")
        calls = []
        for slot in slots:
            if not slot.name:
                continue
            if not slot.announced:
                slot.id = slot.id or f"call_{uuid.uuid4().hex[:24]}"
                yield ToolCallStarted(slot.id, slot.name)
            calls.append(ToolCall(id=slot.id, name=slot.name, arguments="".join(slot.args).strip() or "{}"))
        stop = FINISH_REASONS.get(finish or "stop", "other")
        if calls and stop == "end_turn":  # Ollama and others say "stop" after tool calls
            stop = "tool_use"
        yield Completed(AssistantMessage(text="".join(text), tool_calls=calls), stop, usage)

    def _stream_error(self, err: Any) -> Exception:
        if isinstance(err, dict):
            message = str(err.get("message") or err)
            code = err.get("code") or err.get("type")
        else:
            message, code = str(err), None
        if looks_like_overflow(message, str(code) if code else None):
            return ContextOverflowError(message)
        status = 500  # vLLM and OpenRouter put an HTTP-like status in "code"
        for candidate in (err.get("status"), err.get("code")) if isinstance(err, dict) else ():
            if isinstance(candidate, int) and 400 <= candidate < 600:
                status = candidate
                break
        return classify_http_error(status, message, {}, code=str(code) if code else None)


def _assemble(frag: dict[str, Any], slots: list[_CallSlot], by_index: dict[int, _CallSlot]) -> _CallSlot | None:
    """Add one tool-call fragment to its slot (per `index`; a new id at a used index starts a new call)."""
    if not isinstance(frag, dict):
        return None
    index = frag.get("index")
    if not isinstance(index, int):
        index = len(slots) if frag.get("id") or (frag.get("function") or {}).get("name") else max(len(slots) - 1, 0)
    fn = frag.get("function") or {}
    frag_id = frag.get("id") or ""
    slot = by_index.get(index)
    if slot is None or (frag_id and slot.id and frag_id != slot.id and not slot.generated_id):
        slot = _CallSlot()
        slots.append(slot)
        by_index[index] = slot
    if frag_id and (not slot.id or slot.generated_id):
        slot.id, slot.generated_id = frag_id, False
    name = fn.get("name")
    if isinstance(name, str) and name and not slot.name:
        slot.name = name
    args = fn.get("arguments")
    if isinstance(args, dict | list):
        slot.args = [json.dumps(args)]
    elif isinstance(args, str) and args:
        slot.args.append(args)
    return slot


def _usage(raw: dict[str, Any]) -> Usage:
    details = raw.get("prompt_tokens_details") or {}
    return Usage(input_tokens=int(raw.get("prompt_tokens") or 0), output_tokens=int(raw.get("completion_tokens") or 0),
                 cached_input_tokens=int(details.get("cached_tokens") or 0))

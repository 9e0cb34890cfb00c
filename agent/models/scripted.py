"""An in-process model that plays back scripted replies: for demos and for measuring harness overhead.

Tests of the agent use the fake HTTP servers instead, so the real clients stay
in the path; this model skips HTTP entirely, which is the point for benchmarks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from agent.items import AssistantMessage, ToolCall
from agent.models.base import (
    Completed,
    ModelError,
    ModelRequest,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallStarted,
    Usage,
)


@dataclass
class ScriptedReply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: StopReason | None = None  # default: tool_use if there are tool calls, else end_turn
    usage: Usage | None = None


Scripted = ScriptedReply | AssistantMessage | str
ScriptSource = Sequence[Scripted] | Callable[[ModelRequest], Scripted]


def tool_call(name: str, arguments: str = "{}", id: str | None = None) -> ToolCall:
    return ToolCall(id=id or f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=arguments)


class ScriptedModel:
    """A ModelClient whose replies come from a list (in order) or a function of the request."""

    provider = "scripted"

    def __init__(self, script: ScriptSource, *, model: str = "scripted", chunk_size: int = 16) -> None:
        self.model = model
        self._script = script
        self._next = 0
        self.chunk_size = chunk_size
        self.requests: list[ModelRequest] = []

    def _reply(self, request: ModelRequest) -> ScriptedReply:
        if callable(self._script):
            raw = self._script(request)
        else:
            if self._next >= len(self._script):
                raise ModelError("bad_request", f"scripted model: script exhausted after {self._next} replies")
            raw = self._script[self._next]
            self._next += 1
        if isinstance(raw, str):
            return ScriptedReply(text=raw)
        if isinstance(raw, AssistantMessage):
            return ScriptedReply(text=raw.text, tool_calls=list(raw.tool_calls))
        return raw

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        reply = self._reply(request)
        step = max(1, self.chunk_size)
        for i in range(0, len(reply.text), step):
            yield TextDelta(reply.text[i:i + step])
        for call in reply.tool_calls:
            yield ToolCallStarted(call.id, call.name)
        stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
        usage = reply.usage or Usage(input_tokens=sum(len(getattr(i, "text", "") or getattr(i, "output", ""))
                                                      for i in request.items) // 4 + len(request.system) // 4,
                                     output_tokens=len(reply.text) // 4 + 1)
        yield Completed(AssistantMessage(text=reply.text, tool_calls=list(reply.tool_calls)), stop, usage)

    async def aclose(self) -> None:
        return None

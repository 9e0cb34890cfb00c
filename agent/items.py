"""The conversation as the loop keeps it: one linear list of items.

Provider-neutral. Each model client translates this list to its wire format
(Chat Completions messages, Responses input items, Anthropic content blocks)
and back; the rollout file stores exactly these items, so a session can be
resumed with another provider.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """One call the model asked for. `arguments` is the JSON text as the model sent it."""

    id: str
    name: str
    arguments: str = "{}"


class UserMessage(BaseModel):
    type: Literal["user"] = "user"
    text: str


class AssistantMessage(BaseModel):
    """One model response: its text and the tool calls it made, in order.

    `opaque` keeps provider items that must be sent back verbatim on the next
    request (Anthropic thinking blocks with signatures, Responses reasoning
    items); a client ignores entries whose "provider" is not its own.
    """

    type: Literal["assistant"] = "assistant"
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    opaque: list[dict[str, Any]] = Field(default_factory=list)


class ToolResult(BaseModel):
    """The result for one ToolCall, already budgeted for the model."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    output: str
    is_error: bool = False


class Summary(BaseModel):
    """A compaction: replaces the history before it; sent to the model as a user message."""

    type: Literal["summary"] = "summary"
    text: str


Item = Annotated[UserMessage | AssistantMessage | ToolResult | Summary, Field(discriminator="type")]

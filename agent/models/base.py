"""What the loop needs from a model: a stream of events for one request.

Every client (Chat Completions, Responses, Anthropic Messages, scripted)
implements `ModelClient.stream`. Retries happen inside the client; the loop
sees `Retrying` when a stream is restarted, and must then drop the partial
text it had shown for that attempt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.items import AssistantMessage, Item

StopReason = Literal["end_turn", "tool_use", "max_tokens", "content_filter", "refusal", "other"]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object


@dataclass(frozen=True)
class ModelRequest:
    system: str
    items: Sequence[Item]
    tools: Sequence[ToolSpec] = ()
    max_output_tokens: int | None = None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens


# -- stream events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    """A tool call's id and name are known (its arguments are still streaming)."""

    id: str
    name: str


@dataclass(frozen=True)
class Retrying:
    """The request or stream failed and will be retried after `delay` seconds.

    Text and tool calls streamed before this belong to a discarded attempt.
    """

    attempt: int  # 1 for the first retry
    max_attempts: int
    delay: float
    reason: str


@dataclass(frozen=True)
class Completed:
    """The last event of a successful stream."""

    message: AssistantMessage
    stop_reason: StopReason
    usage: Usage = field(default_factory=Usage)


StreamEvent = TextDelta | ReasoningDelta | ToolCallStarted | Retrying | Completed


# -- errors ---------------------------------------------------------------------------------------------

ErrorKind = Literal["auth", "bad_request", "not_found", "context_overflow", "rate_limit", "overloaded",
                    "server", "network", "stream", "config"]


class ModelError(Exception):
    """A request that failed for good (retries exhausted, or not retryable)."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message

    def __str__(self) -> str:
        code = f" (HTTP {self.status})" if self.status else ""
        return f"{self.kind}{code}: {self.message}"


class ContextOverflowError(ModelError):
    """The prompt does not fit the model's context window: compact, do not retry as is."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__("context_overflow", message, status=status)


class ModelClient(Protocol):
    provider: str
    model: str

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Yield events for one request; the last one is `Completed`, or raise ModelError."""
        ...

    async def aclose(self) -> None: ...

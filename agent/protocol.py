"""The only language front ends speak: `Op`s in, `Event`s out.

A front end (`stockade exec`, `stockade chat`, a test, an MCP server) sends
ops on one trio channel and reads events from another; it never calls the
loop, the model or the sandbox directly. Both are pydantic discriminated
unions on `type`, so each line of `stockade exec --json` is one event
serialised as is, and `parse_op` / `parse_event` read them back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter


class ContinueReason(StrEnum):
    """Why the loop goes round again (recorded every iteration, so nothing is recovered twice)."""

    TOOL_USE = "tool_use"
    MAX_OUTPUT_RECOVERY = "max_output_recovery"
    REACTIVE_COMPACT_RETRY = "reactive_compact_retry"
    STOP_HOOK_BLOCKING = "stop_hook_blocking"
    USER_STEERING = "user_steering"


class TerminalReason(StrEnum):
    """Why a turn ended."""

    COMPLETED = "completed"
    MAX_TURNS = "max_turns"
    MODEL_ERROR = "model_error"
    PROMPT_TOO_LONG = "prompt_too_long"
    INTERRUPTED = "interrupted"
    BUDGET_EXHAUSTED = "budget_exhausted"


Decision = Literal["approved", "approved_for_session", "denied", "abort"]

# -- ops (front end -> agent) -------------------------------------------------------------------------


class UserInput(BaseModel):
    """Start a turn, or steer the running one (injected before its next model call)."""

    type: Literal["user_input"] = "user_input"
    text: str


class Interrupt(BaseModel):
    """Cancel the running turn: the model stream and the tools running; the session lives on."""

    type: Literal["interrupt"] = "interrupt"


class ApprovalDecision(BaseModel):
    type: Literal["approval_decision"] = "approval_decision"
    call_id: str
    decision: Decision


class Shutdown(BaseModel):
    """End the session. graceful: first finish the running turn and the input already queued."""

    type: Literal["shutdown"] = "shutdown"
    graceful: bool = False


Op = Annotated[UserInput | Interrupt | ApprovalDecision | Shutdown, Field(discriminator="type")]

# -- events (agent -> front end) ----------------------------------------------------------------------


class SessionStarted(BaseModel):
    type: Literal["session_started"] = "session_started"
    session_id: str
    provider: str
    model: str
    cwd: str
    sandbox: str  # policy mode and backend, e.g. "workspace-write (bwrap)"
    approval: str
    rollout_path: str | None = None
    resumed: bool = False


class TurnStarted(BaseModel):
    type: Literal["turn_started"] = "turn_started"
    turn: int


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    text: str


class ReasoningDelta(BaseModel):
    type: Literal["reasoning_delta"] = "reasoning_delta"
    text: str


class StreamRetry(BaseModel):
    """The model request failed and is retried: text streamed since the last message is void."""

    type: Literal["stream_retry"] = "stream_retry"
    attempt: int
    max_attempts: int
    delay: float
    reason: str


class AgentMessage(BaseModel):
    """A complete assistant message (its text; tool calls follow as their own events)."""

    type: Literal["agent_message"] = "agent_message"
    text: str


class ToolCallBegin(BaseModel):
    type: Literal["tool_call_begin"] = "tool_call_begin"
    call_id: str
    name: str
    arguments: dict[str, Any]
    command: list[str] | None = None  # for shell calls: the argv that will run
    sandboxed: bool = True


class ToolOutputDelta(BaseModel):
    type: Literal["tool_output_delta"] = "tool_output_delta"
    call_id: str
    stream: Literal["stdout", "stderr"]
    chunk: str


class DenialInfo(BaseModel):
    kind: str
    target: str
    rule: str
    detail: str = ""


class ToolCallEnd(BaseModel):
    type: Literal["tool_call_end"] = "tool_call_end"
    call_id: str
    name: str
    output: str  # what the model receives (budgeted)
    is_error: bool = False
    exit_code: int | None = None
    duration: float = 0.0
    denials: list[DenialInfo] = Field(default_factory=list)
    sandboxed: bool = True


class ApprovalRequest(BaseModel):
    """The agent waits for an `ApprovalDecision` with this call_id."""

    type: Literal["approval_request"] = "approval_request"
    call_id: str
    kind: Literal["exec", "patch", "escalation", "retry_unsandboxed", "mcp_tool"]
    command: list[str] | None = None
    paths: list[str] = Field(default_factory=list)
    reason: str  # why stockade asks
    justification: str | None = None  # what the model said, for escalations


class PlanUpdated(BaseModel):
    type: Literal["plan_updated"] = "plan_updated"
    explanation: str | None = None
    plan: list[dict[str, str]]


class TokenCount(BaseModel):
    type: Literal["token_count"] = "token_count"
    input_tokens: int
    output_tokens: int
    total_tokens: int


class IterationEnded(BaseModel):
    """One model call + its tools done; the loop goes on for `reason`."""

    type: Literal["iteration_ended"] = "iteration_ended"
    turn: int
    iteration: int
    reason: ContinueReason


class Compacted(BaseModel):
    type: Literal["compacted"] = "compacted"
    items_before: int
    items_after: int


class TurnCompleted(BaseModel):
    type: Literal["turn_completed"] = "turn_completed"
    turn: int
    reason: TerminalReason
    last_message: str = ""
    iterations: int = 0
    error: str | None = None


class Error(BaseModel):
    type: Literal["error"] = "error"
    message: str
    kind: str = "error"


class Warning(BaseModel):
    type: Literal["warning"] = "warning"
    message: str


class SessionEnded(BaseModel):
    type: Literal["session_ended"] = "session_ended"
    session_id: str


Event = Annotated[
    SessionStarted | TurnStarted | MessageDelta | ReasoningDelta | StreamRetry | AgentMessage | ToolCallBegin
    | ToolOutputDelta | ToolCallEnd | ApprovalRequest | PlanUpdated | TokenCount | IterationEnded | Compacted
    | TurnCompleted | Error | Warning | SessionEnded,
    Field(discriminator="type"),
]

_OPS: TypeAdapter[Op] = TypeAdapter(Op)
_EVENTS: TypeAdapter[Event] = TypeAdapter(Event)


def parse_op(data: str | bytes | dict[str, Any]) -> Op:
    return _OPS.validate_json(data) if isinstance(data, str | bytes) else _OPS.validate_python(data)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    return _EVENTS.validate_json(data) if isinstance(data, str | bytes) else _EVENTS.validate_python(data)

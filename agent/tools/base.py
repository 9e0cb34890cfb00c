"""What a tool is: a name, a pydantic argument schema, whether it only reads, and how it runs.

Tools never decide whether they may run: the orchestrator does (safety,
approval, which policy). A tool gets a `ToolContext` holding the confined
session, so every filesystem effect happens in the sandbox's worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agent.models.base import ToolSpec
from agent.protocol import Event


class ToolArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ToolOutput:
    text: str
    is_error: bool = False
    exit_code: int | None = None
    duration: float = 0.0
    denials: list[Any] = field(default_factory=list)  # sandbox.Denial
    sandboxed: bool = True


@dataclass
class ToolContext:
    session: Any  # sandbox.Session: the confined worker every effect goes through
    workspace: str
    call_id: str
    emit: Callable[[Event], Awaitable[None]]
    escalated: bool = False  # approved to run outside the sandbox (full access)
    escalated_session: Callable[[], Awaitable[Any]] | None = None  # a full-access Session, made on demand
    state: dict[str, Any] = field(default_factory=dict)  # per-agent scratch (e.g. the plan)


class Tool:
    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]
    read_only: ClassVar[bool] = False  # read-only tools may run in parallel with each other

    def spec(self) -> ToolSpec:
        schema = self.Args.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return ToolSpec(self.name, self.description, schema)

    async def run(self, ctx: ToolContext, args: Any) -> ToolOutput:
        raise NotImplementedError

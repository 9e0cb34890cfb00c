"""update_plan: the model keeps a short step list the user can watch; nothing runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.protocol import PlanUpdated
from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str
    status: Literal["pending", "in_progress", "completed"]


class UpdatePlanArgs(ToolArgs):
    explanation: str | None = None
    plan: list[PlanStep] = Field(description="The whole plan; at most one step in_progress.")


class UpdatePlan(Tool):
    name = "update_plan"
    description = "Record or update your step-by-step plan (the whole list each time; one step in_progress)."
    Args = UpdatePlanArgs
    read_only = True

    async def run(self, ctx: ToolContext, args: UpdatePlanArgs) -> ToolOutput:
        if sum(s.status == "in_progress" for s in args.plan) > 1:
            return ToolOutput("at most one step may be in_progress", is_error=True)
        steps = [s.model_dump() for s in args.plan]
        ctx.state["plan"] = steps
        await ctx.emit(PlanUpdated(explanation=args.explanation, plan=steps))
        return ToolOutput("Plan updated")

"""The tools the model may call. Each validates its arguments with pydantic; all effects go through the sandbox."""

from __future__ import annotations

from agent.tools.apply_patch import ApplyPatch
from agent.tools.base import Tool, ToolContext, ToolOutput
from agent.tools.list_dir import ListDir
from agent.tools.read_file import ReadFile
from agent.tools.search import Search
from agent.tools.shell import Shell
from agent.tools.update_plan import UpdatePlan

__all__ = ["ApplyPatch", "ListDir", "ReadFile", "Search", "Shell", "Tool", "ToolContext", "ToolOutput",
           "UpdatePlan", "default_tools"]


def default_tools() -> list[Tool]:
    return [Shell(), ApplyPatch(), ReadFile(), ListDir(), Search(), UpdatePlan()]

"""search: a regex over the files under a path, run by the confined worker (denied files are skipped)."""

from __future__ import annotations

from pydantic import Field

from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from agent.tools.errors import file_error


class SearchArgs(ToolArgs):
    pattern: str = Field(description="Python regular expression, matched per line.")
    path: str = Field(".", description="Directory or file to search, relative to the workspace.")
    glob: str | None = Field(None, description="Only files whose name matches this glob, e.g. '*.py'.")
    ignore_case: bool = False
    max_results: int = Field(200, ge=1, le=2000)


class Search(Tool):
    name = "search"
    description = ("Search file contents for a regular expression; returns path:line:text for each match. "
                   ".git is skipped; unreadable or binary files are skipped and counted.")
    Args = SearchArgs
    read_only = True

    async def run(self, ctx: ToolContext, args: SearchArgs) -> ToolOutput:
        import re

        from sandbox.session import FileOpError

        try:
            re.compile(args.pattern)
        except re.error as exc:
            return ToolOutput(f"invalid regular expression {args.pattern!r}: {exc}", is_error=True)
        try:
            found = await ctx.session.asearch(args.pattern, args.path, args.glob, max_results=args.max_results,
                                              ignore_case=args.ignore_case)
        except FileOpError as exc:
            return file_error(exc)
        prefix = ctx.workspace.rstrip("/") + "/"
        lines = [f"{m.path.removeprefix(prefix)}:{m.line}:{m.text}" for m in found.matches]
        tail = f"[{len(found.matches)} matches in {found.files_scanned} files"
        if found.files_skipped:
            tail += f"; {found.files_skipped} files skipped (unreadable, binary or too large)"
        tail += "; stopped early: narrow the search]" if found.truncated else "]"
        return ToolOutput("\n".join([*lines, tail]) if lines else f"no matches {tail}")

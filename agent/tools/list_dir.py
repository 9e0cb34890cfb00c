"""list_dir: a directory's entries, listed by the confined worker."""

from __future__ import annotations

from pydantic import Field

from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from agent.tools.errors import file_error


class ListDirArgs(ToolArgs):
    path: str = Field(".", description="Directory, relative to the workspace or absolute.")
    limit: int = Field(500, ge=1, le=10_000, description="Most entries to show.")


class ListDir(Tool):
    name = "list_dir"
    description = "List a directory: one entry per line, directories end with '/', files show their size."
    Args = ListDirArgs
    read_only = True

    async def run(self, ctx: ToolContext, args: ListDirArgs) -> ToolOutput:
        from sandbox.session import FileOpError

        try:
            entries = await ctx.session.alist_dir(args.path, args.limit + 1)
        except FileOpError as exc:
            return file_error(exc)
        lines = []
        for entry in entries[:args.limit]:
            if entry.type == "dir":
                lines.append(entry.name + "/")
            elif entry.type == "link":
                lines.append(entry.name + "@")
            else:
                lines.append(f"{entry.name}  ({entry.size} bytes)")
        if len(entries) > args.limit:
            lines.append(f"[more than {args.limit} entries; raise limit to see more]")
        return ToolOutput("\n".join(lines) if lines else "(empty directory)")

"""read_file: a file's lines, numbered, read by the confined worker (deny-read applies)."""

from __future__ import annotations

from pydantic import Field

from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from agent.tools.errors import file_error

MAX_BYTES = 1 << 20


class ReadFileArgs(ToolArgs):
    path: str = Field(description="File path, relative to the workspace or absolute.")
    offset: int = Field(1, ge=1, description="First line to show (1-based).")
    limit: int = Field(400, ge=1, le=5000, description="How many lines to show at most.")


class ReadFile(Tool):
    name = "read_file"
    description = ("Read a text file and return its lines prefixed with their numbers. Use offset/limit for "
                   "long files. Reads go through the sandbox: secrets on the deny-read list are refused.")
    Args = ReadFileArgs
    read_only = True

    async def run(self, ctx: ToolContext, args: ReadFileArgs) -> ToolOutput:
        from sandbox.session import FileOpError

        try:
            content = await ctx.session.aread_file(args.path, MAX_BYTES)
        except FileOpError as exc:
            return file_error(exc)
        if b"\0" in content.data[:8192]:
            return ToolOutput(f"{args.path}: binary file ({content.size} bytes); not shown", is_error=True)
        lines = content.data.decode("utf-8", "replace").splitlines()
        start = args.offset - 1
        if start >= len(lines) and lines:
            return ToolOutput(f"{args.path} has {len(lines)} lines; offset {args.offset} is past the end",
                              is_error=True)
        shown = lines[start:start + args.limit]
        width = len(str(start + len(shown)))
        body = "\n".join(f"{n:>{width}}\t{line}" for n, line in enumerate(shown, start + 1))
        notes = []
        if start + len(shown) < len(lines):
            notes.append(f"[lines {start + 1}-{start + len(shown)} of {len(lines)}; use offset to read more]")
        if content.truncated:
            notes.append(f"[file is {content.size} bytes; only the first {len(content.data)} were read]")
        return ToolOutput("\n".join([body, *notes]) if notes else body)

"""apply_patch: edit files with the `*** Begin Patch` format, all or nothing, in the sandbox.

Every hunk of every file is verified against the current contents (read by
the confined worker) before anything changes; the edits are then applied by
the worker in one all-or-nothing step, so a refused write (a protected path,
outside the writable roots) leaves every file as it was.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent.tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from agent.tools.errors import file_error

GRAMMAR = """*** Begin Patch
*** Add File: path/new.py        (then every line prefixed with +)
*** Delete File: path/old.py
*** Update File: path/file.py
*** Move to: path/renamed.py     (optional)
@@ def some_function():          (optional scope line; @@ alone is fine)
 context line (space prefix)
-removed line
+added line
*** End of File                  (optional: anchor the hunk at the end)
*** End Patch"""


class ApplyPatchArgs(ToolArgs):
    patch: str = Field(description="The whole patch, from '*** Begin Patch' to '*** End Patch'.")


class ApplyPatch(Tool):
    name = "apply_patch"
    description = ("Create, edit, move or delete files with a patch. Paths are relative to the workspace. "
                   "Give 3 lines of context around each change; all hunks must match or nothing is changed.\n"
                   "Format:\n" + GRAMMAR)
    Args = ApplyPatchArgs

    async def plan(self, ctx: ToolContext, args: ApplyPatchArgs, base: str = "") -> Any:
        """The verified edits (a PatchPlan), or a ToolOutput saying why the patch cannot apply.

        base: the directory the patch's paths are relative to (a shell `cd dir && apply_patch`), relative
        to the workspace; the plan's paths are rewritten to include it.
        """
        import dataclasses
        import errno
        import os

        import trio

        from agent.patch import PatchError, parse_patch, plan_patch
        from sandbox.session import FileOpError

        try:
            patch = parse_patch(args.patch)
        except PatchError as exc:
            return ToolOutput(f"invalid patch: {exc}\nExpected format:\n{GRAMMAR}", is_error=True)
        session = ctx.session

        def read(path: str) -> str | None:
            try:
                return session.read_file(os.path.join(base, path), 16 << 20).data.decode("utf-8")
            except FileOpError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return None
                raise

        try:
            plan = await trio.to_thread.run_sync(plan_patch, patch, read)
        except PatchError as exc:
            return ToolOutput(f"patch not applied (nothing was changed): {exc}", is_error=True)
        except FileOpError as exc:
            return file_error(exc)
        except UnicodeDecodeError:
            return ToolOutput("patch not applied: a target file is not UTF-8 text", is_error=True)
        if base:
            def at(path: str | None) -> str | None:
                return os.path.normpath(os.path.join(base, path)) if path else path

            plan.edits = [{**e, "path": at(e["path"])} for e in plan.edits]
            plan.changes = [dataclasses.replace(c, path=at(c.path), move_to=at(c.move_to)) for c in plan.changes]
        return plan

    async def apply(self, ctx: ToolContext, plan: Any) -> ToolOutput:
        from sandbox.session import FileOpError

        session = ctx.session
        if ctx.escalated and ctx.escalated_session is not None:
            session = await ctx.escalated_session()
        try:
            await session.aapply_edits(plan.edits, parents=True)
        except FileOpError as exc:
            out = file_error(exc)
            out.text = f"patch not applied (nothing was changed): {out.text}"
            return out
        return ToolOutput("Success. Updated the following files:\n" + plan.summary(), sandboxed=not ctx.escalated)

    async def run(self, ctx: ToolContext, args: ApplyPatchArgs) -> ToolOutput:
        plan = await self.plan(ctx, args)
        if isinstance(plan, ToolOutput):
            return plan
        return await self.apply(ctx, plan)

"""The change a run made to a git workspace, as one patch (`stockade exec --diff FILE`, for CI).

git runs inside the confined session, like every other command: the
workspace's own git config cannot make it run anything outside the sandbox,
and `.git` stays read-only (GIT_OPTIONAL_LOCKS=0: no index refresh). The
patch is `git diff --binary HEAD` (tracked files) followed by a new-file diff
for every untracked, non-ignored file, so `git apply` on a clean checkout of
HEAD reproduces the workspace. A workspace below the repository's top (a
monorepo's service) gets the change under it only, with paths from the top,
as `git apply` at the top of a checkout expects.
"""

from __future__ import annotations

from typing import Any

GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


class DiffError(Exception):
    pass


async def workspace_diff(session: Any) -> str:
    """The patch from HEAD to the workspace as it is now ('' when nothing changed)."""
    import os

    env = {**os.environ, **GIT_ENV}
    head = await session.aexec(["git", "rev-parse", "--verify", "-q", "HEAD"], env=env, timeout=60)
    if head.exit_code != 0:
        inside = await session.aexec(["git", "rev-parse", "--is-inside-work-tree"], env=env, timeout=60)
        if inside.exit_code != 0:
            raise DiffError("--diff needs the workspace to be a git repository")
        raise DiffError("--diff needs a commit to diff against (the repository has no HEAD yet)")
    top_run = await session.aexec(["git", "rev-parse", "--show-toplevel"], env=env, timeout=60)
    top = os.path.realpath(top_run.stdout.decode("utf-8", "surrogateescape").strip()) if top_run.exit_code == 0 \
        else None
    if not top:
        raise DiffError(f"cannot find the repository's top: {_why(top_run)}")
    workspace = os.path.realpath(session.resolved.workspace if session.resolved is not None else ".")
    scope = os.path.relpath(workspace, top)
    paths = [] if scope == "." else [scope]
    tracked = await session.aexec(["git", "-c", "core.quotepath=off", "diff", "--binary", "--no-color",
                                   "--no-ext-diff", "--no-textconv", "HEAD", "--", *paths], cwd=top, env=env,
                                  timeout=300)
    if tracked.exit_code != 0 or tracked.stdout_truncated:
        raise DiffError(f"git diff failed: {_why(tracked)}")
    untracked = await session.aexec(["git", "ls-files", "--others", "--exclude-standard", "-z", "--", *paths],
                                    cwd=top, env=env, timeout=120)
    if untracked.exit_code != 0:
        raise DiffError(f"git ls-files failed: {_why(untracked)}")
    parts = [tracked.stdout.decode("utf-8", "surrogateescape")]
    for name in filter(None, untracked.stdout.decode("utf-8", "surrogateescape").split("\0")):
        new = await session.aexec(["git", "diff", "--binary", "--no-color", "--no-index", "--", "/dev/null", name],
                                  cwd=top, env=env, timeout=120)
        if new.exit_code not in (0, 1) or new.stdout_truncated:  # 1: "there are differences"
            raise DiffError(f"git diff of new file {name} failed: {_why(new)}")
        parts.append(new.stdout.decode("utf-8", "surrogateescape"))
    return "".join(parts)


def _why(result: Any) -> str:
    if result.stdout_truncated:
        return "the diff is larger than the sandbox's output cap (limits.output_bytes)"
    text = result.stderr.decode("utf-8", "replace").strip()
    return text.splitlines()[-1] if text else f"exit {result.returncode}"

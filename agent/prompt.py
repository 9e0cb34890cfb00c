"""The system prompt: who the agent is, the sandbox it works in, and the project's AGENTS.md."""

from __future__ import annotations

from policies.model import Mode, NetworkMode, SandboxPolicy

AGENTS_MD_MAX_BYTES = 32 * 1024

BASE = """You are a coding agent working in a software project on the user's machine. You act through tools: \
run commands with `shell`, edit files with `apply_patch`, and read with `read_file`, `list_dir` and `search`. \
Keep a short plan with `update_plan` for multi-step work.

How to work:
- Look before you change: read the relevant code and run the tests first when there are any.
- Make focused changes with apply_patch (3 lines of context around each change). Do not rewrite whole files \
when a patch will do.
- After changing code, run the tests or the program to verify. Report what you verified and how.
- When done, reply with a brief summary of what changed and why, and anything left for the user. \
Do not call a tool in your final message."""


def sandbox_section(policy: SandboxPolicy, approval: str, backend: str) -> str:
    roots = [policy.workspace, *policy.writable_roots]
    if policy.mode is Mode.FULL_ACCESS:
        fs = "Full access: commands run without a sandbox."
    elif policy.mode is Mode.READ_ONLY:
        fs = "Read-only: commands may read files but not write anywhere (except a private /tmp)."
    else:
        fs = (f"Workspace-write: commands may write only inside {', '.join(roots)} and a private /tmp; "
              f"{', '.join(policy.protected)} stay read-only. Everything else is read-only.")
    net = {NetworkMode.OFF: "Network access is off (loopback inside the sandbox works).",
           NetworkMode.ON: "Network access is on.",
           NetworkMode.ALLOWLIST: "Network access only to: " + ", ".join(policy.network.allow_domains)
           + " (through a proxy set in HTTP(S)_PROXY)."}[policy.network.mode]
    ask = {
        "never": "You will never be asked for approval and cannot lift the sandbox: when it refuses something, "
                 "work around it inside the sandbox or explain what the user must do.",
        "on-request": "If a command truly needs to run outside the sandbox (the sandbox denied it and the task "
                      "requires it), call shell with sandbox_permissions=\"require_escalated\" and a one-line "
                      "justification; the user decides.",
        "on-failure": "When the sandbox denies a command, the user may be asked to re-run it outside.",
        "untrusted": "Commands that are not known to be read-only need the user's approval before they run.",
    }.get(approval, "")
    return (f"# Sandbox\nWorkspace: {policy.workspace} (the working directory of your commands).\n{fs}\n{net}\n"
            f"Secrets such as ~/.ssh and cloud credentials cannot be read. Enforced by the kernel ({backend}). "
            f"Approval policy: {approval}. {ask}")


def system_prompt(policy: SandboxPolicy, approval: str, backend: str, agents_md: str | None = None) -> str:
    parts = [BASE, sandbox_section(policy, approval, backend)]
    if agents_md:
        parts.append("# Project instructions (AGENTS.md)\n" + agents_md.strip())
    return "\n\n".join(parts)

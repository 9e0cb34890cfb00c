"""`stockade exec`, `stockade chat`, `stockade resume`: front ends that speak only the protocol.

This module is the `stockade` entry point: agent commands are handled here,
everything else (`run`, `explain`, `doctor`) goes to `sandbox.cli`, whose
`stockade run` fast path must stay free of trio, httpx and pydantic, so
nothing heavy is imported before the command is known.

Exit codes of `stockade exec` / `stockade resume`:
  0    the turn completed
  1    the model failed (after retries), the agent hit an internal error, or --diff failed
  2    bad usage or configuration (no model configured, bad policy file, unknown session)
  3    a limit ended the turn: --max-turns, --max-time, --token-budget, or the prompt no longer fits
  125  the sandbox could not be set up (see `stockade doctor`)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import sys

AGENT_COMMANDS = ("exec", "chat", "resume")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in AGENT_COMMANDS:
        try:
            group = agent_group()  # imports trio, httpx, pydantic: a Ctrl-C often lands here
        except KeyboardInterrupt:
            sys.exit(130)
        group.main(args=args, prog_name="stockade")
        return
    if not args or args[0] in ("-h", "--help"):
        agent_group().main(args=args, prog_name="stockade")
        return
    from sandbox.cli import main as sandbox_main

    sandbox_main(args)


def agent_group():  # type: ignore[no-untyped-def]
    """The click group of `sandbox.cli_full`, with the agent's commands added."""
    from agent.commands import chat, exec_command, resume
    from sandbox.cli_full import cli

    for command in (exec_command, chat, resume):
        cli.add_command(command)
    cli.help = HELP
    return cli


HELP = """stockade: run untrusted commands, and coding agents, in a kernel-enforced sandbox.

\b
  stockade run -- CMD      run a command confined (workspace-write, no network)
  stockade exec PROMPT     let an agent do a task; every command it runs is sandboxed
  stockade chat            the same, interactively
  stockade resume ID       continue a saved agent session
  stockade explain         show the plan a policy compiles to on this host
  stockade doctor          show what this host supports and how to fix what is missing
  stockade mcp             serve the sandbox to an MCP client (stdio)
"""

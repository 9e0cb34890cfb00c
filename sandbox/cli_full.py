"""The click half of the CLI: help text, `explain` and `doctor`.

Imported only when not on the `stockade run` fast path.
"""

from __future__ import annotations

import json
import shlex
import sys

import click

from sandbox.cli import (
    EXIT_NOEXEC,
    EXIT_NOTFOUND,
    EXIT_SETUP,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    RUN_OPTIONS,
    UsageError,
    _overrides,
    run_command,
)

RUN_HELP = f"""Run CMD inside the sandbox and exit with its exit code.

\b
Examples:
  stockade run -- pytest -q
  stockade run --policy read-only -- git status
  stockade run --writable ~/.cache/pip --timeout 600 -- pip install -e .
  stockade run --json -- make test        # one JSON Result on stdout

\b
Exit codes:
  N      the command's exit code
  128+N  the command died from signal N
  {EXIT_TIMEOUT}    the wall timeout expired; the whole process tree was killed
  {EXIT_SETUP}    the sandbox could not be set up (nothing ran; see `stockade doctor`)
  {EXIT_NOEXEC}    CMD is not executable
  {EXIT_NOTFOUND}    CMD was not found
  {EXIT_USAGE}      bad usage or bad policy input

\b
Policy sources, later wins: the profile, ~/.config/stockade/config.toml,
<workspace>/.stockade/config.toml (may only tighten), then these flags.
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stockade")
def cli() -> None:
    """stockade: run untrusted commands in a kernel-enforced sandbox.

    \b
    stockade run -- CMD      run a command confined (workspace-write, no network)
    stockade explain         show the plan a policy compiles to on this host
    stockade doctor          show what this host supports and how to fix what is missing
    stockade mcp             serve the sandbox to an MCP client (stdio)
    """


def _run_params() -> list[click.Parameter]:
    params: list[click.Parameter] = []
    for name, meta, repeat, help_text in RUN_OPTIONS:
        if meta is None:
            params.append(click.Option([name], is_flag=True, help=help_text))
        else:
            params.append(click.Option([name], metavar=meta, multiple=repeat, help=help_text))
    params.append(click.Argument(["command"], nargs=-1, required=False))
    return params


def _run_callback(**kwargs: object) -> None:
    # Only reached when click parsed the line (e.g. `stockade run` with no
    # command); the fast path in sandbox.cli handles real runs.
    args = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "run" else []
    sys.exit(run_command(list(args)))


cli.add_command(click.Command(
    "run",
    params=_run_params(),
    callback=_run_callback,
    help=RUN_HELP,
    short_help="Run a command inside the sandbox.",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
))


def _policy_options(func):  # type: ignore[no-untyped-def]
    for name, meta, repeat, help_text in reversed(RUN_OPTIONS):
        if name in ("--json", "--timeout", "--env"):
            continue
        if meta is None:
            func = click.option(name, is_flag=True, help=help_text)(func)
        else:
            func = click.option(name, metavar=meta, multiple=repeat, help=help_text)(func)
    return func


def _collect(kwargs: dict[str, object]) -> dict[str, object]:
    opts: dict[str, object] = {}
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value in (None, False, ()):
            continue
        opts[flag] = list(value) if isinstance(value, tuple) else value
    return opts


def _load(opts: dict[str, object]):  # type: ignore[no-untyped-def]
    from policies.config import PolicyError, build_policy

    try:
        ov = _overrides(opts)
        no_config = bool(opts.get("--no-config"))
        return build_policy(ov, use_user_config=not no_config, use_project_config=not no_config)
    except (UsageError, PolicyError) as exc:
        click.echo(f"stockade: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@cli.command()
@_policy_options
@click.option("--platform", "target", type=click.Choice(["linux", "macos", "windows"]), default=None,
              help="Compile for another platform (default: this host).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.argument("command", nargs=-1)
def explain(target: str | None, as_json: bool, command: tuple[str, ...], **kwargs: object) -> None:
    """Show the plan a policy compiles to on this host.

    Prints the resolved policy (real paths, protected paths, secrets that will
    be hidden), the backend `auto` picks and why, which protections are in
    force, and the exact bwrap argv / Landlock rules / seccomp rules.

    \b
    Examples:
      stockade explain
      stockade explain --policy read-only --json
      stockade explain --backend landlock -- pytest -q
    """
    from sandbox.explain import explain_plan, render_text

    policy = _load(_collect(kwargs))
    backend = str(kwargs.get("backend") or "auto")
    plan = explain_plan(policy, backend=backend, command=list(command) or ["CMD"], platform=target)
    if as_json:
        click.echo(json.dumps(plan, indent=2, default=str))
    else:
        click.echo(render_text(plan))
    if plan.get("error"):
        sys.exit(EXIT_SETUP)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--refresh", is_flag=True, help="Probe again instead of using the cached facts.")
def doctor(as_json: bool, refresh: bool) -> None:
    """Show what this host supports and the exact fix for anything missing.

    Exits 0 when `auto` can confine the default policy on this host, 1 otherwise.
    """
    from sandbox.doctor import doctor_report, render_doctor

    report = doctor_report(refresh=refresh)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(render_doctor(report))
    sys.exit(0 if report["ok"] else 1)



@cli.command()
@_policy_options
def mcp(**kwargs: object) -> None:
    """Serve the sandbox to an MCP client on stdio (tools: exec, read_file, write_file, list_dir, search).

    One confined session serves every call: its /tmp and what it wrote persist
    between calls. The policy is fixed here, by these options (and the config
    files, as for `stockade run`); a client cannot widen it. Logs go to stderr.

    \b
    Examples (an MCP client's server entry):
      {"command": "stockade", "args": ["mcp", "--cwd", "/path/to/repo"]}
      {"command": "stockade", "args": ["mcp", "--policy", "read-only", "--cwd", "/path/to/repo"]}
      {"command": "stockade", "args": ["mcp", "--allow-domain", "pypi.org", "--cwd", "."]}
    """
    import trio

    from sandbox.mcp_server import serve

    policy = _load(_collect(kwargs))
    try:
        sys.exit(trio.run(serve, policy, str(kwargs.get("backend") or "auto")))
    except KeyboardInterrupt:
        sys.exit(130)

def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)

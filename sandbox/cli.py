"""The `stockade` command line.

`stockade run` is the hot path and is parsed by hand: importing click costs
more than the bwrap call it wraps. Everything else (help, `explain`,
`doctor`) goes through click. Both read the same option table, `RUN_OPTIONS`.

Exit codes of `stockade run`:
  N      the command's own exit code
  128+N  the command was killed by signal N
  124    the wall timeout expired (the whole process tree was killed)
  125    the sandbox could not be set up (nothing ran)
  126    the command exists but could not be executed
  127    the command was not found
  2      bad usage or bad policy input (one line naming file, key and reason)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_SETUP = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

# sandbox.backends.ALL_BACKENDS, spelled out here so the hot path's usage check imports nothing.
BACKENDS = ("auto", "bwrap", "landlock", "seatbelt", "windows", "none")

# name, takes value, repeatable, help
RUN_OPTIONS: tuple[tuple[str, str | None, bool, str], ...] = (
    ("--policy", "NAME|FILE", False,
     "Named profile (read-only, workspace-write, full-access, ci) or a TOML file. "
     "Default: your config's `profile`, else workspace-write."),
    ("--cwd", "DIR", False, "Workspace and working directory (default: the current directory)."),
    ("--writable", "DIR", True, "Extra writable root (repeatable)."),
    ("--network", "off|on|allowlist", False,
     "Network access for the command (default: off). allowlist: only the allowed domains, through a "
     "filtering proxy (HTTP_PROXY/HTTPS_PROXY are set for the command)."),
    ("--allow-domain", "DOMAIN", True,
     "Allow this domain (`*.example.com`: its subdomains; `host:port`: that port only; default ports "
     "80 and 443) through the proxy; implies --network allowlist (repeatable)."),
    ("--timeout", "SECONDS", False,
     "Wall timeout, at most 2000000 seconds; the whole process tree is killed (exit 124)."),
    ("--backend", "|".join(BACKENDS), False,
     "Enforcement backend; auto picks the strongest that gives every protection the policy needs on this "
     "platform (Linux: bwrap, else landlock; macOS: seatbelt; Windows: windows). none: full-access only."),
    ("--env", "NAME[=VALUE]", True,
     "Pass one variable through even if it looks secret, or set it (repeatable)."),
    ("--json", None, False, "Print the Result as one JSON object on stdout instead of streaming."),
    ("--no-config", None, False, "Ignore the user and project config files."),
)
_VALUED = {name for name, meta, _, _ in RUN_OPTIONS if meta}
_REPEATABLE = {name for name, _, rep, _ in RUN_OPTIONS if rep}
_FLAGS = {name for name, meta, _, _ in RUN_OPTIONS if not meta}


class UsageError(Exception):
    pass


@dataclass
class RunArgs:
    options: dict[str, object] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


def parse_run_args(args: list[str]) -> RunArgs:
    """`[OPTIONS] [--] CMD [ARGS...]`; options stop at `--` or the first non-option."""
    out = RunArgs()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.command = args[i + 1:]
            break
        if not arg.startswith("-") or arg == "-":
            out.command = args[i:]
            break
        name, eq, value = arg.partition("=")
        if name in _FLAGS:
            if eq:
                raise UsageError(f"option {name} takes no value (got {arg!r})")
            out.options[name] = True
            i += 1
            continue
        if name not in _VALUED:
            known = ", ".join(n for n, *_ in RUN_OPTIONS)
            raise UsageError(f"no such option: {name} (options: {known}; see stockade run --help)")
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"option {name} needs a value")
            value = args[i + 1]
            i += 2
        else:
            i += 1
        if name in _REPEATABLE:
            out.options.setdefault(name, [])
            out.options[name].append(value)  # type: ignore[union-attr]
        else:
            out.options[name] = value
    if not out.command:
        raise UsageError("no command given: stockade run [OPTIONS] -- CMD [ARGS...]")
    return out


def _overrides(opts: dict[str, object]):  # -> policies.config.Overrides
    """Validate the option values (one-line UsageError) and turn them into config Overrides."""
    import math

    from policies.config import MAX_TIMEOUT, Overrides

    for name in ("--policy", "--cwd", "--writable"):
        values = opts.get(name)
        # An empty value is almost always an unset shell variable (`--cwd "$WS"`): silently falling back
        # to the current directory or the default profile would run the command somewhere else.
        if values == "" or (isinstance(values, list) and "" in values):
            raise UsageError(f"{name}: empty value")
    backend = opts.get("--backend")
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    timeout = None
    if "--timeout" in opts:
        try:
            timeout = float(str(opts["--timeout"]))
        except ValueError:
            raise UsageError(f"--timeout: {opts['--timeout']!r} is not a number of seconds") from None
        # nan never expires and inf / huge values overflow the supervisor's poll timeout.
        if not math.isfinite(timeout) or timeout > MAX_TIMEOUT:
            raise UsageError(f"--timeout: {opts['--timeout']!r} is not a number of seconds "
                             f"between 0 and {MAX_TIMEOUT:g}")
    passthrough: list[str] = []
    sets: list[tuple[str, str]] = []
    for item in opts.get("--env", []):  # type: ignore[union-attr]
        name, eq, value = str(item).partition("=")
        if not name or not name.replace("_", "a").isalnum():
            raise UsageError(f"--env: {item!r} is not NAME or NAME=VALUE")
        if eq:
            sets.append((name, value))
        else:
            passthrough.append(name)
    network = opts.get("--network")
    if network is not None and network not in ("off", "on", "allowlist"):
        raise UsageError(f"--network: {network!r} is not one of off, on, allowlist")
    return Overrides(
        policy=opts.get("--policy"),  # type: ignore[arg-type]
        workspace=opts.get("--cwd"),  # type: ignore[arg-type]
        writable=tuple(opts.get("--writable", ())),  # type: ignore[arg-type]
        network=network,  # type: ignore[arg-type]
        timeout=timeout,
        env_passthrough=tuple(passthrough),
        env_set=tuple(sets),
        allow_domains=tuple(str(d) for d in opts.get("--allow-domain", ())),  # type: ignore[union-attr]
    )


def _err(msg: str) -> None:
    sys.stderr.write(f"stockade: {msg}\n")
    sys.stderr.flush()


def run_command(args: list[str]) -> int:
    """`stockade run`: returns the exit code."""
    from policies.config import PolicyError, build_policy

    try:
        parsed = parse_run_args(args)
        ov = _overrides(parsed.options)
        no_config = bool(parsed.options.get("--no-config"))
        policy = build_policy(ov, use_user_config=not no_config, use_project_config=not no_config)
    except (UsageError, PolicyError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    as_json = bool(parsed.options.get("--json"))
    backend = str(parsed.options.get("--backend", "auto"))

    from sandbox.backends.base import SandboxSetupError
    from sandbox.execute import run

    command = parsed.command
    missing = _check_command(command[0], policy)
    if missing is not None:
        code, msg = missing
        _err(msg)
        if as_json:
            _print_json_failure(command, code, msg)
        return code

    out = sys.stdout.buffer
    err = sys.stderr.buffer

    def stream(name: str, chunk: bytes) -> None:
        fh = out if name == "stdout" else err
        try:
            fh.write(chunk)
            fh.flush()
        except BrokenPipeError:  # `stockade run -- yes | head -1`: the reader is gone
            raise _OutputClosed from None

    import signal

    received: list[int] = []

    def _terminate(signum: int, _frame: object) -> None:
        # SIGTERM/SIGHUP to stockade must still kill the sandboxed tree and clean up.
        received.append(signum)
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):  # Windows has no SIGHUP
        if signum is not None:
            signal.signal(signum, _terminate)
    try:
        result = run(
            command,
            policy,
            cwd=policy.workspace,
            stdin=0 if _stdin_usable() else None,
            backend=backend,
            on_output=None if as_json else stream,
        )
        if as_json:
            out.write(result.to_json().encode() + b"\n")
            out.flush()
        else:
            for warning in result.warnings:
                _err(f"warning: {warning}")
            for denial in result.denials:
                err.write(denial.hint().encode() + b"\n")
            err.flush()
    except SandboxSetupError as exc:
        _err(f"sandbox setup failed: {exc}")
        if as_json:
            _print_json_failure(command, EXIT_SETUP, f"sandbox setup failed: {exc}")
        return EXIT_SETUP
    except KeyboardInterrupt:
        return 128 + (received[0] if received else signal.SIGINT)
    except (_OutputClosed, BrokenPipeError):
        # The run already killed the tree; exit as a command writing to a closed pipe would (SIGPIPE),
        # without a traceback or Python's "Exception ignored" noise when it flushes at exit.
        _plug_stdio(force=(1, 2))
        return 128 + signal.SIGPIPE
    setup = [d for d in result.denials if d.kind == "setup"]
    if setup:
        if not as_json:
            _err(f"sandbox setup failed: {setup[0].detail}; nothing ran (see `stockade doctor`)")
        return EXIT_SETUP
    if result.timed_out:
        if not as_json:
            _err(f"timed out after {policy.limits.timeout:g}s; killed the whole process tree")
        return EXIT_TIMEOUT
    return result.returncode


def _check_command(cmd: str, policy) -> tuple[int, str] | None:  # type: ignore[no-untyped-def]
    """(exit code, message) when CMD cannot run: not found (127) or not executable (126).

    A bare name is looked up in the PATH the command will get inside the sandbox (`--env PATH=...`,
    `env.set`, else the caller's), relative entries against the workspace, as the sandbox would.
    """
    if "/" not in cmd:
        import shutil

        from policies.env import build_env

        path = build_env(policy, os.environ)["PATH"]
        search = os.pathsep.join(os.path.join(policy.workspace, d) for d in path.split(os.pathsep))
        if shutil.which(cmd, path=search) is None:
            return EXIT_NOTFOUND, f"{cmd}: command not found"
        return None
    target = os.path.join(policy.workspace, cmd)
    if not os.path.exists(target):
        return EXIT_NOTFOUND, f"{cmd}: no such file"
    if not os.access(target, os.X_OK) or os.path.isdir(target):
        return EXIT_NOEXEC, f"{cmd}: not executable"
    return None


def _print_json_failure(command: list[str], code: int, message: str) -> None:
    """`--json` promises one object on stdout, also when nothing could run (125/126/127)."""
    import json

    data = {"argv": command, "exit_code": code, "signal": None, "stdout": "", "stderr": message + "\n",
            "stdout_truncated": False, "stderr_truncated": False, "stdout_total": 0,
            "stderr_total": len(message) + 1, "timed_out": False, "duration": 0.0, "peak_rss_kb": None,
            "backend": "", "protections": {}, "denials": [], "warnings": [], "returncode": code,
            "error": message}
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


class _OutputClosed(Exception):
    """stockade's own stdout/stderr was closed by its reader while the command was writing."""


def _plug_stdio(force: tuple[int, ...] = ()) -> None:
    """Point closed fds 0-2 (`>&-`), and `force`d ones, at /dev/null, and give sys.stdout/stderr something.

    Otherwise a pipe of the run could take the number of a closed fd, and writing a message would raise.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            if fd not in force:
                continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def _stdin_usable() -> bool:
    try:
        os.fstat(0)
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    _plug_stdio()
    if args and args[0] == "run" and not _asks_help(args[1:]):
        sys.exit(run_command(args[1:]))
    from sandbox.cli_full import cli

    cli.main(args=args, prog_name="stockade")


def _asks_help(args: list[str]) -> bool:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-"):
            return False
        if arg in ("--help", "-h"):
            return True
        i += 2 if arg in _VALUED else 1
    return not args

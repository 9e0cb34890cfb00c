"""The click commands `exec`, `chat` and `resume` (loaded only when one of them runs)."""

from __future__ import annotations

import functools
import io
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import trio

from agent.loop import Limits
from agent.models.base import ModelClient
from agent.orchestrator import APPROVAL_POLICIES
from agent.protocol import (
    AgentMessage,
    ApprovalDecision,
    ApprovalRequest,
    Event,
    Interrupt,
    Shutdown,
    TerminalReason,
    TurnCompleted,
    TurnStarted,
    UserInput,
)
from agent.render import ANSWERS, Renderer, approval_question
from agent.runner import AgentSettings, EventSink, open_agent
from sandbox.cli_full import _collect, _load, _policy_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LIMIT, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 3, 125, 130
EXIT_FOR = {
    TerminalReason.COMPLETED: EXIT_OK,
    TerminalReason.MODEL_ERROR: EXIT_FAILED,
    TerminalReason.MAX_TURNS: EXIT_LIMIT,
    TerminalReason.BUDGET_EXHAUSTED: EXIT_LIMIT,
    TerminalReason.PROMPT_TOO_LONG: EXIT_LIMIT,
    TerminalReason.INTERRUPTED: EXIT_INTERRUPTED,
}

EXEC_HELP = """Let an agent do PROMPT in the workspace; every command it runs is sandboxed.

\b
Examples:
  stockade exec "make the failing test in tests/test_api.py pass"
  stockade exec --policy read-only "explain how the config loader works"
  git diff | stockade exec -                  # PROMPT from stdin
  stockade exec --json -o last.txt "fix lint errors"   # JSONL events on stdout
  stockade exec --diff fix.patch "make the tests pass" # CI: the change as a patch

\b
The model: --provider/--model/--base-url, else [agent] in ~/.config/stockade/config.toml,
else STOCKADE_PROVIDER / STOCKADE_MODEL / STOCKADE_BASE_URL and the provider's key
(ANTHROPIC_API_KEY, OPENAI_API_KEY). Local servers: --provider ollama --model qwen2.5-coder,
or --provider openai-chat --base-url http://127.0.0.1:8080/v1 (llama.cpp, vLLM, LM Studio).

\b
Progress (streamed text, each command with its exit code, denials) goes to stderr;
the final message to stdout (with --json: one JSON event per line on stdout instead).
The session is saved; `stockade resume ID` continues it.

\b
Exit codes:
  0    completed
  1    the model failed (after retries), or --diff could not be computed or written
  2    bad usage or configuration (e.g. no model configured: the message says what to set)
  3    a limit ended the turn (--max-turns, --max-time, --token-budget, prompt too long)
  125  the sandbox could not be set up (see `stockade doctor`)
  130  interrupted (Ctrl-C)
"""


def _agent_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--model", "-m", metavar="NAME", help="Model name (default: the provider's default)."),
        click.option("--provider", metavar="NAME",
                     help="anthropic | openai (Responses API) | openai-chat (any Chat Completions server) | ollama."),
        click.option("--base-url", metavar="URL", help="API base URL (local or proxy servers)."),
        click.option("--approval", type=click.Choice(APPROVAL_POLICIES), default=None,
                     help="When to ask you: untrusted (before anything not known read-only), on-failure (after a "
                          "sandbox denial), on-request (when the model asks to leave the sandbox), never "
                          "(default for exec: denials go back to the model)."),
        click.option("--max-turns", type=click.IntRange(1), default=None, help="Most model calls per task (50)."),
        click.option("--max-time", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
                     help="Wall-clock limit for the whole run."),
        click.option("--token-budget", type=click.IntRange(1), default=None, metavar="TOKENS",
                     help="Stop once this many input+output tokens are spent."),
        click.option("--ephemeral", is_flag=True, help="Do not save the session transcript."),
        click.option("--stop-check", metavar="CMD", default=None,
                     help="A shell command that must pass before the agent may finish (e.g. 'pytest -q'): run in "
                          "the sandbox when the model says it is done; if it fails, its output goes back to the "
                          "model, at most 3 times per task. Default: [agent] stop_check in your config."),
    ]
    for option in reversed(options):
        func = option(func)
    return _policy_options(func)


@dataclass
class Prepared:
    settings: AgentSettings
    client: ModelClient


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"stockade: {message}", err=True)
    sys.exit(code)


def _user_agent_settings(no_config: bool) -> dict[str, Any]:
    if no_config:
        return {}
    from policies.config import PolicyError, read_toml, user_config_path

    path = user_config_path()
    if not path.is_file():
        return {}
    try:
        return dict(read_toml(path).get("agent", {}))
    except PolicyError as exc:
        _fail(str(exc))
        raise AssertionError from exc  # unreachable


def _prepare(kw: dict[str, Any], *, default_approval: str, resume: Any = None) -> Prepared:
    from agent.models import make_client
    from agent.models.base import ModelError
    from agent.models.config import resolve_config

    policy_kw = {k: v for k, v in kw.items() if k not in ("model", "provider", "base_url", "approval", "max_turns",
                                                         "max_time", "token_budget", "ephemeral", "stop_check")}
    meta = resume.meta if resume is not None else None
    if meta is not None:
        policy_kw = _resume_policy_flags(policy_kw, meta)
        policy_kw["cwd"] = policy_kw.get("cwd") or meta.cwd
        if not os.path.isdir(meta.cwd):
            _fail(f"the session's workspace {meta.cwd} no longer exists")
    file_settings = _user_agent_settings(bool(policy_kw.get("no_config")))
    policy = _load(_collect(policy_kw))
    try:
        config = resolve_config(provider=kw.get("provider") or (meta.provider if meta else None),
                                model=kw.get("model") or (meta.model if meta else None),
                                base_url=kw.get("base_url") or (meta.base_url if meta else None),
                                settings=file_settings)
    except ModelError as exc:
        _fail(exc.message)
        raise
    approval = kw.get("approval") or (meta.approval if meta else None) or file_settings.get("approval") \
        or default_approval
    if approval not in APPROVAL_POLICIES:
        _fail(f"approval {approval!r} is not one of {', '.join(APPROVAL_POLICIES)}")
    limits = Limits(max_turns=kw.get("max_turns") or int(file_settings.get("max_turns", 50)),
                    wall_time=kw.get("max_time"), token_budget=kw.get("token_budget"))
    if meta is not None and kw.get("approval") and kw["approval"] != meta.approval:
        click.echo(f"stockade: note: approval for this resume is {kw['approval']} (the session had {meta.approval})",
                   err=True)
    settings = AgentSettings(policy=policy, approval=approval, policy_name=str(policy_kw.get("policy") or ""),
                             limits=limits, backend=str(policy_kw.get("backend") or "auto"),
                             persist=not kw.get("ephemeral"), resume=resume, base_url=config.base_url,
                             meta_extra={POLICY_FLAGS: _recordable(policy_kw)},
                             mcp_servers=_mcp_servers(file_settings),
                             stop_check=_stop_check(kw.get("stop_check"), file_settings))
    try:
        client = make_client(config)
    except TypeError as exc:  # an unknown key in [agent] options reaches the client's constructor
        _fail(f"[agent] options in {_config_name()}: {exc}")
        raise
    except ModelError as exc:
        _fail(exc.message)
        raise
    return Prepared(settings, client)


def _stop_check(flag: str | None, file_settings: dict[str, Any]) -> list[str] | None:
    command = flag if flag is not None else file_settings.get("stop_check")
    if command is None:
        return None
    if not command.strip():
        _fail("--stop-check: give a command (e.g. 'pytest -q')" if flag is not None
              else f"{_config_name()}: agent.stop_check: give a command (e.g. 'pytest -q')")
    return ["sh", "-c", command]


def _mcp_servers(file_settings: dict[str, Any]) -> list[Any]:
    from agent.mcp_client import McpError, parse_servers

    try:
        return parse_servers(file_settings.get("mcp_servers"), _config_name())
    except McpError as exc:
        _fail(str(exc))
        raise


POLICY_FLAGS = "policy_flags"  # key in SessionMeta.extra: the sandbox options the session was started with
_POLICY_KEYS = ("policy", "writable", "network", "allow_domain", "backend", "no_config")


def _recordable(policy_kw: dict[str, Any]) -> dict[str, Any]:
    """The policy options worth replaying on resume, in a form that means the same from any directory."""
    out: dict[str, Any] = {}
    for key in _POLICY_KEYS:
        value = policy_kw.get(key)
        if value in (None, False, (), []):
            continue
        if key == "policy" and ("/" in str(value) or str(value).endswith(".toml")):
            value = os.path.abspath(os.path.expanduser(str(value)))  # a policy file, not a profile name
        out[key] = list(value) if isinstance(value, tuple | list) else value
    return out


def _flag_text(flags: dict[str, Any]) -> str:
    parts = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        else:
            parts.extend(f"{flag} {v}" for v in (value if isinstance(value, list) else [value]))
    return " ".join(parts) or "no policy options"


def _resume_policy_flags(policy_kw: dict[str, Any], meta: Any) -> dict[str, Any]:
    """The policy options of a resume: the session's own, each replaced only by one given again, with a note.

    Replaying the recorded options (not only a mode name) keeps a profile chosen in the user's config,
    extra writable roots and network settings as they were; a resume that changes them says so.
    """
    recorded = meta.extra.get(POLICY_FLAGS) if isinstance(meta.extra, dict) else None
    given = _recordable(policy_kw)
    out = dict(policy_kw)
    if not isinstance(recorded, dict):  # a transcript from before policy options were recorded
        out["policy"] = policy_kw.get("policy") or meta.policy
        return out
    changed = {k: v for k, v in given.items() if recorded.get(k) != v}
    for key, value in recorded.items():
        if key in _POLICY_KEYS and key not in given:
            out[key] = tuple(value) if isinstance(value, list) else value
    if changed:
        click.echo(f"stockade: note: this resume changes the session's sandbox options: {_flag_text(changed)} "
                   f"(the session was started with {_flag_text(recorded)})", err=True)
    return out


def _config_name() -> str:
    from policies.config import user_config_path

    return str(user_config_path())


# -- exec -----------------------------------------------------------------------------------------------


class TerminalApprover:
    """Answers approval requests on the controlling terminal; without one, denies and says so."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        try:
            self.tty: Any = open("/dev/tty", "r+")
        except OSError:
            self.tty = None

    async def __call__(self, request: ApprovalRequest) -> str:
        if self.tty is None:
            self.renderer(_warning(f"approval needed but there is no terminal to ask: denied ({request.kind})"))
            return "denied"
        question = approval_question(request) + "\n> "

        def ask() -> str:
            self.tty.write(question)
            self.tty.flush()
            return self.tty.readline()

        while True:
            line = await trio.to_thread.run_sync(ask, abandon_on_cancel=True)
            if not line:
                return "denied"
            answer = ANSWERS.get(line.strip().lower())
            if answer:
                return answer

    def close(self) -> None:
        if self.tty is not None:
            self.tty.close()


def _leaf(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` in `exc` or in the exception groups trio wraps it in (nurseries are strict)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
    return None


def _setup_failure(exc: BaseException) -> int | None:
    """Report a sandbox or transcript that could not be set up in one line; its exit code (None: not one)."""
    from agent.rollout import RolloutError
    from sandbox.backends.base import SandboxSetupError

    setup = _leaf(exc, SandboxSetupError)
    if setup is not None:
        click.echo(f"stockade: the sandbox could not be set up: {setup}", err=True)
        return EXIT_SETUP
    transcript = _leaf(exc, RolloutError)
    if transcript is not None:
        click.echo(f"stockade: {transcript}", err=True)
        return EXIT_USAGE
    return None


def _run_front_end(front_end: Callable[..., Any], *args: Any) -> None:
    """trio.run a front end and exit with its code; a Ctrl-C at any moment is 130, never a traceback.

    The front ends handle SIGINT while the agent runs; one that lands just outside their handler
    (before it is installed, or during the final clean-up) reaches trio as KeyboardInterrupt.
    """
    try:
        code = trio.run(front_end, *args)
    except BaseException as exc:  # anything but a Ctrl-C is re-raised
        if _leaf(exc, KeyboardInterrupt) is None:
            raise
        code = EXIT_INTERRUPTED
    # The run is over: a Ctrl-C now must not turn the exit code into a death by SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def _ctrl_c_is_130(command: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C while a command prepares (imports, reading PROMPT from stdin): exit 130, not click's "Aborted!" (1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def _check_target(flag: str, path: Path | None) -> None:
    """Refuse an output file that cannot be written before the agent spends a run on it (exit 2)."""
    if path is None:
        return
    parent = path.parent
    if not parent.is_dir():
        _fail(f"{flag} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{flag} {path}: the directory {parent} is not writable")


def _warning(message: str) -> Event:
    from agent.protocol import Warning

    return Warning(message=message)


async def _run_headless(prepared: Prepared, prompt: str | None, as_json: bool, output: Path | None,
                        diff: Path | None = None) -> int:
    """One turn, no interaction except approval prompts on the terminal."""
    sink = EventSink()
    renderer = Renderer()
    approver = TerminalApprover(renderer)
    last_message = ""
    final: TurnCompleted | None = None
    interrupted = False
    diff_error: str | None = None

    drained = trio.Event()

    async def consume(agent: Any) -> None:
        nonlocal last_message
        try:
            async for event in sink.events():
                if isinstance(event, AgentMessage):
                    last_message = event.text
                if as_json:
                    sys.stdout.write(event.model_dump_json() + "\n")
                    sys.stdout.flush()
                else:
                    renderer(event)
                if isinstance(event, ApprovalRequest):
                    decision = await approver(event)
                    agent.orchestrator.decide(event.call_id, decision)
        finally:
            drained.set()

    async def on_sigint(agent: Any, cancel: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if interrupted:
                    cancel.cancel()  # second Ctrl-C: stop now
                interrupted = True
                agent.interrupt()

    try:
        async with trio.open_nursery() as nursery:
            async with open_agent(prepared.settings, prepared.client, sink) as agent:
                nursery.start_soon(consume, agent)
                nursery.start_soon(on_sigint, agent, nursery.cancel_scope)
                final = await agent.turn(prompt)
                if diff is not None:
                    diff_error = await _write_diff(agent, diff)
            sink.send.close()
            with trio.move_on_after(5):  # let the consumer print the last events, then stop
                await drained.wait()
            nursery.cancel_scope.cancel()
    except BaseException as exc:  # re-raised unless it is a known setup failure
        code = _setup_failure(exc)
        if code is None:
            raise
        return code
    finally:
        approver.close()
    if diff_error is not None:
        click.echo(f"stockade: {diff_error}", err=True)
    output_error = False
    if output is not None and last_message:
        try:
            output.write_text(last_message + ("" if last_message.endswith("\n") else "\n"))
        except OSError as exc:
            click.echo(f"stockade: -o {output}: {exc.strerror or exc}", err=True)
            output_error = True
    if final is None:
        return EXIT_INTERRUPTED
    if not as_json and final.last_message:
        sys.stdout.write(final.last_message + ("" if final.last_message.endswith("\n") else "\n"))
    if final.reason is TerminalReason.INTERRUPTED and not interrupted:
        return EXIT_FAILED  # e.g. aborted from an approval prompt
    code = EXIT_FOR.get(final.reason, EXIT_FAILED)
    return EXIT_FAILED if code == EXIT_OK and (diff_error is not None or output_error) else code


async def _write_diff(agent: Any, path: Path) -> str | None:
    """Write the workspace's change as a patch; the error message, if it cannot."""
    from agent.workspace_diff import DiffError, workspace_diff

    try:
        patch = await workspace_diff(agent.orchestrator.session)
    except DiffError as exc:
        return str(exc)
    try:
        path.write_text(patch, encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        return f"--diff {path}: {exc.strerror}"
    return None


def _tolerant_stdin() -> None:
    """Undecodable bytes on stdin become U+FFFD instead of a UnicodeDecodeError traceback."""
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")


def _clean_text(text: str) -> str:
    """Bytes that were not UTF-8 (argv arrives with them as lone surrogates) as U+FFFD: the model and the
    transcript need valid text."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _read_prompt(prompt: str) -> str:
    if prompt == "-":
        _tolerant_stdin()
        text = sys.stdin.read()
        if not text.strip():
            _fail("PROMPT is '-' but stdin was empty")
        return _clean_text(text)
    if not prompt.strip():
        _fail("PROMPT is empty")
    return _clean_text(prompt)


@click.command("exec", help=EXEC_HELP, short_help="Let an agent do a task, every command sandboxed.")
@_agent_options
@click.option("--json", "as_json", is_flag=True, help="Print every event as one JSON line on stdout.")
@click.option("-o", "--output-last-message", "output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the agent's last message to FILE.")
@click.option("--diff", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the workspace's change (git diff from HEAD, new files included) to FILE, for CI.")
@click.argument("prompt")
@_ctrl_c_is_130
def exec_command(prompt: str, as_json: bool, output: Path | None, diff: Path | None, **kw: Any) -> None:
    _check_target("-o", output)
    _check_target("--diff", diff)
    text = _read_prompt(prompt)
    prepared = _prepare(kw, default_approval="never")
    _run_front_end(_run_headless, prepared, text, as_json, output, diff)


# -- chat -----------------------------------------------------------------------------------------------

CHAT_HELP = """Talk to the agent interactively; every command it runs is sandboxed.

\b
Type a task and press Enter. While the agent works, lines you type steer it
(they reach the model before its next call); Ctrl-C interrupts the turn (the
running command is killed, the session lives on); Ctrl-D or /exit quits.
Approval prompts appear on the terminal: y(es), a(lways this session), n(o),
x (no, and stop the turn). The default approval policy is on-request: the
model may ask to run a command outside the sandbox, and you decide.
"""


async def _run_chat(prepared: Prepared, first: str | None) -> int:
    sink = EventSink()
    renderer = Renderer(show_output=True)
    ops_send, ops_receive = trio.open_memory_channel[Any](100)
    pending: list[ApprovalRequest] = []
    state = {"turn": False, "idle_sigint": 0}

    async def consume() -> None:
        async for event in sink.events():
            if isinstance(event, TurnStarted):
                state["turn"] = True
                renderer.working(trio.current_time())
            elif isinstance(event, TurnCompleted):
                state["turn"] = False
                renderer.working(None)
            renderer(event)
            if isinstance(event, ApprovalRequest):
                pending.append(event)
                renderer.working(None)
                sys.stderr.write(approval_question(event) + "\n> ")
                sys.stderr.flush()
            elif isinstance(event, TurnCompleted):
                sys.stderr.write("\n> ")
                sys.stderr.flush()

    async def ticker() -> None:
        while True:
            await trio.sleep(0.5)
            if state["turn"] and not pending:
                renderer.tick()

    async def read_lines(cancel: trio.CancelScope) -> None:
        if first:
            await ops_send.send(UserInput(text=first))
        else:
            sys.stderr.write("> ")
            sys.stderr.flush()
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:  # end of input: let the running turn finish, then stop
                await ops_send.send(Shutdown(graceful=True))
                return
            if line.strip() in ("/exit", "/quit"):
                await ops_send.send(Shutdown())
                return
            text = line.rstrip("\n")
            if pending:
                answer = ANSWERS.get(text.strip().lower())
                if answer is None:
                    sys.stderr.write("answer y, a, n or x\n> ")
                    continue
                request = pending.pop(0)
                renderer.working(trio.current_time())
                await ops_send.send(ApprovalDecision(call_id=request.call_id, decision=answer))  # type: ignore[arg-type]
            elif text.strip():
                await ops_send.send(UserInput(text=text))
                if state["turn"]:
                    renderer(_warning("noted: this goes to the model before its next call"))

    async def on_sigint() -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                if state["turn"]:
                    pending.clear()
                    await ops_send.send(Interrupt())
                else:
                    state["idle_sigint"] += 1
                    if state["idle_sigint"] >= 2:
                        await ops_send.send(Shutdown())
                        return
                    sys.stderr.write("\n(Ctrl-C again, Ctrl-D or /exit to quit)\n> ")
                    sys.stderr.flush()

    try:
        async with trio.open_nursery() as nursery, open_agent(prepared.settings, prepared.client, sink) as agent:
            nursery.start_soon(consume)
            nursery.start_soon(ticker)
            nursery.start_soon(on_sigint)
            nursery.start_soon(read_lines, nursery.cancel_scope)
            await agent.serve(ops_receive)
            nursery.cancel_scope.cancel()
    except BaseException as exc:  # re-raised unless it is a known setup failure
        code = _setup_failure(exc)
        if code is None:
            raise
        return code
    sys.stderr.write("\n")
    return EXIT_OK


@click.command("chat", help=CHAT_HELP, short_help="Work with the agent interactively.")
@_agent_options
@click.argument("prompt", required=False)
@_ctrl_c_is_130
def chat(prompt: str | None, **kw: Any) -> None:
    _tolerant_stdin()
    prepared = _prepare(kw, default_approval="on-request")
    _run_front_end(_run_chat, prepared, _clean_text(prompt) if prompt else prompt)


# -- resume ---------------------------------------------------------------------------------------------

RESUME_HELP = """Continue a saved agent session (ID: a unique prefix of its id, or `last`).

\b
  stockade resume --list                 the saved sessions, newest first
  stockade resume last "now add tests"   one more task, headless (like exec)
  stockade resume 3f2a                   continue where it stopped (e.g. after a crash), or chat
  stockade resume --fork 3f2a "try B"    a new session starting from that one's history

Without PROMPT: a session that stopped mid-turn (killed, interrupted) is
continued headless; otherwise an interactive chat starts on a terminal.
The workspace, policy, approval and model of the session are reused unless
given again as options.
"""


@click.command("resume", help=RESUME_HELP, short_help="Continue a saved agent session.")
@_agent_options
@click.option("--list", "list_only", is_flag=True, help="List saved sessions and exit.")
@click.option("--fork", is_flag=True, help="Continue under a new session id; the original stays as it was.")
@click.option("--json", "as_json", is_flag=True, help="Print every event as one JSON line on stdout.")
@click.option("-o", "--output-last-message", "output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the agent's last message to FILE.")
@click.option("--diff", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the workspace's change (git diff from HEAD, new files included) to FILE, for CI.")
@click.argument("session_id", required=False)
@click.argument("prompt", required=False)
@_ctrl_c_is_130
def resume(session_id: str | None, prompt: str | None, list_only: bool, fork: bool, as_json: bool,
           output: Path | None, diff: Path | None, **kw: Any) -> None:
    from agent.items import AssistantMessage, ToolResult, UserMessage
    from agent.rollout import RolloutError, age, find_session, list_sessions, load

    if list_only:
        rows = list_sessions()
        if not rows:
            click.echo("no saved sessions")
        for sid, mtime, path in rows:
            try:
                meta = load(path).meta
                click.echo(f"{sid}  {age(mtime):>8}  {meta.provider}/{meta.model}  {meta.cwd}")
            except (RolloutError, OSError) as exc:
                click.echo(f"{sid}  {age(mtime):>8}  (unreadable: {exc})")
        return
    if not session_id:
        _fail("give a session id (or `last`); `stockade resume --list` shows them")
    _check_target("-o", output)
    _check_target("--diff", diff)
    try:
        loaded = load(find_session(str(session_id)))
    except (RolloutError, OSError) as exc:
        _fail(str(exc))
        raise
    for note in loaded.warnings:
        click.echo(f"stockade: warning: {note}", err=True)
    prepared = _prepare(kw, default_approval="never", resume=loaded)
    prepared.settings.fork = fork
    if prompt is not None:
        _run_front_end(_run_headless, prepared, _read_prompt(prompt), as_json, output, diff)
    last = loaded.items[-1] if loaded.items else None
    if isinstance(last, UserMessage | ToolResult) or (isinstance(last, AssistantMessage) and last.tool_calls):
        # It stopped before the model answered (killed or interrupted mid-turn): carry on.
        _run_front_end(_run_headless, prepared, None, as_json, output, diff)
    if diff is not None:
        _fail("--diff needs a PROMPT (or a session stopped mid-turn): an interactive chat writes no patch")
    if sys.stdin.isatty():
        _tolerant_stdin()
        _run_front_end(_run_chat, prepared, None)
    _fail("the session ended cleanly and stdin is not a terminal: give a PROMPT to continue it")

"""`stockade mcp`: the sandbox as an MCP server on stdio, for agents and tools that bring their own loop.

One confined `Session` serves every call, so its `/tmp` and the files it
wrote persist between calls, and each command costs a spawn, not a sandbox
setup. The policy is fixed when the server starts (flags, profiles, config
files, as for `stockade run`); nothing a client sends can widen it. File
tools run in the session's confined worker, so the kernel judges them
exactly as it judges a command.

Wire format (MCP, stdio transport): newline-delimited JSON-RPC 2.0 on
stdin/stdout, nothing else on stdout; logs go to stderr. Requests are
served concurrently; `notifications/cancelled` kills the command it names
(its whole tree) and, as the spec asks, that request gets no response.
EOF on stdin (the spec's shutdown) lets calls in flight finish for up to
EOF_GRACE seconds, then cancels them; SIGTERM/SIGINT cancel them at once.
Either way the session is closed: nothing it made is left behind.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import trio

from policies.model import NetworkMode, SandboxPolicy
from sandbox.aio import unwrap_group
from sandbox.backends.base import SandboxSetupError
from sandbox.result import Result
from sandbox.session import FileOpError, Session, SessionError

PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")  # newest first
MAX_LINE = 64 << 20  # bytes of one JSON-RPC message; a longer line is refused and skipped
MAX_READ = 1 << 20  # read_file's default and largest answer, bytes
EOF_GRACE = 10.0  # seconds calls in flight may still finish after the client closed stdin
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603


class ToolError(Exception):
    """A tool call that could not be carried out: reported as a result with isError, never as a crash."""


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def tool_list(policy: SandboxPolicy) -> list[dict[str, Any]]:
    network = policy.network.mode is not NetworkMode.OFF
    writes = policy.mode.value != "read-only"
    return [
        {"name": "exec",
         "description": ("Run a command in the sandbox and return its exit code and output. `command` is an argv "
                         "list, or a string run with `sh -c`. It runs in a confined session: "
                         f"{_describe(policy)}. Files it writes in the workspace and /tmp persist between "
                         "calls. What the sandbox refused is listed in `denials`."),
         "inputSchema": _schema({
             "command": {"anyOf": [{"type": "array", "items": {"type": "string"}, "minItems": 1},
                                   {"type": "string", "minLength": 1}],
                         "description": "argv list, or a shell command line (run with sh -c)"},
             "workdir": {"type": "string", "description": "working directory, relative to the workspace"},
             "timeout_ms": {"type": "integer", "minimum": 1, "description": "wall timeout; the tree is killed"},
             "stdin": {"type": "string", "description": "text fed to the command's stdin (default: none)"},
         }, ["command"]),
         "outputSchema": _schema({
             "exit_code": {"type": ["integer", "null"]}, "signal": {"type": ["integer", "null"]},
             "timed_out": {"type": "boolean"}, "stdout": {"type": "string"}, "stderr": {"type": "string"},
             "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"},
             "duration": {"type": "number"}, "denials": {"type": "array", "items": {"type": "object"}},
         }, ["exit_code", "signal", "timed_out", "stdout", "stderr", "denials"]),
         "annotations": {"title": "Run a sandboxed command", "readOnlyHint": False,
                         "destructiveHint": writes, "idempotentHint": False, "openWorldHint": network}},
        {"name": "read_file",
         "description": "Read a text file as the sandbox allows (secrets on the deny-read list are refused).",
         "inputSchema": _schema({
             "path": {"type": "string", "description": "relative to the workspace, or absolute"},
             "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_READ}}, ["path"]),
         "annotations": {"title": "Read a file", "readOnlyHint": True, "openWorldHint": False}},
        {"name": "write_file",
         "description": "Create or replace a file (atomically) where the sandbox allows writes.",
         "inputSchema": _schema({
             "path": {"type": "string", "description": "relative to the workspace, or absolute"},
             "content": {"type": "string"},
             "create_dirs": {"type": "boolean", "description": "create missing parent directories"}},
             ["path", "content"]),
         "annotations": {"title": "Write a file", "readOnlyHint": False, "destructiveHint": True,
                         "idempotentHint": True, "openWorldHint": False}},
        {"name": "list_dir",
         "description": "List a directory (name, type, size), as the sandbox allows.",
         "inputSchema": _schema({"path": {"type": "string", "description": "default: the workspace"}}, []),
         "annotations": {"title": "List a directory", "readOnlyHint": True, "openWorldHint": False}},
        {"name": "search",
         "description": "Lines matching a regular expression in the files under a path (`.git` skipped; "
                        "unreadable, binary and huge files are skipped and counted).",
         "inputSchema": _schema({
             "pattern": {"type": "string"}, "path": {"type": "string", "description": "default: the workspace"},
             "glob": {"type": "string", "description": "only file names matching this, e.g. *.py"},
             "ignore_case": {"type": "boolean"},
             "max_results": {"type": "integer", "minimum": 1, "maximum": 5000}}, ["pattern"]),
         "annotations": {"title": "Search file contents", "readOnlyHint": True, "openWorldHint": False}},
    ]


def _describe(policy: SandboxPolicy) -> str:
    net = policy.network.mode.value
    if policy.network.mode is NetworkMode.ALLOWLIST:
        net = "allowlist (" + ", ".join(policy.network.allow_domains) + ")"
    return f"policy {policy.mode.value}, workspace {policy.workspace}, network {net}"


# -- argument checks ------------------------------------------------------------------------------------

def _str(args: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ToolError(f"`{key}` must be a non-empty string")
    return value


def _int(args: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ToolError(f"`{key}` must be an integer in {low}..{high}")
    return value


def _bool(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise ToolError(f"`{key}` must be true or false")
    return value


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _valid_text(s: str) -> str:
    """`s` as valid Unicode: a non-UTF-8 file name decodes to lone surrogates, which no UTF-8 writer accepts."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate surrogateescape did not make (e.g. "\ud800" sent by the client)
        return s.encode("utf-8", "replace").decode("utf-8")


def _valid(value: Any) -> Any:
    """A JSON value with every string made valid Unicode (see `_valid_text`)."""
    if isinstance(value, str):
        return _valid_text(value)
    if isinstance(value, dict):
        return {_valid(k): _valid(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid(v) for v in value]
    return value


def _invalid_string(value: Any, where: str = "arguments") -> str | None:
    """Where a client-sent string holds a lone surrogate (JSON allows "\\ud800"; nothing can run or write it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _invalid_string(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")
        if found:
            return found
    return None


def _result(text: str, structured: dict[str, Any] | None = None, *, error: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": error}
    if structured is not None:
        out["structuredContent"] = structured
    return out


def _exec_text(r: Result) -> str:
    if r.timed_out:
        head = "timed out (the whole process tree was killed)"
    elif r.signal is not None:
        head = f"killed by signal {r.signal}"
    else:
        head = f"exit code {r.exit_code}"
    parts = [head]
    if r.stdout:
        parts.append("stdout:\n" + _text(r.stdout))
    if r.stderr:
        parts.append("stderr:\n" + _text(r.stderr))
    if r.denials:
        parts.append("the sandbox refused:\n" + "\n".join(d.hint() for d in r.denials))
    return "\n".join(parts)


# -- the server -----------------------------------------------------------------------------------------

class Server:
    """JSON-RPC dispatch over one session; `serve` runs until stdin ends."""

    def __init__(self, session: Session, policy: SandboxPolicy, setup_error: str | None = None,
                 out_fd: int | None = None) -> None:
        self.session = session
        self.policy = policy
        self.setup_error = setup_error
        self.version = PROTOCOL_VERSIONS[0]
        self._out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()) if out_fd is None else out_fd)
        self._send_lock = trio.Lock()
        self._running: dict[Any, trio.CancelScope] = {}
        self._tools: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "exec": self._exec, "read_file": self._read_file, "write_file": self._write_file,
            "list_dir": self._list_dir, "search": self._search}

    async def serve(self) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        try:
            async with trio.open_nursery() as nursery:
                async for line in _lines(stdin):
                    if line is None:
                        await self._send({"jsonrpc": "2.0", "id": None, "error": {
                            "code": PARSE_ERROR, "message": f"message longer than {MAX_LINE} bytes"}})
                        continue
                    await self._dispatch(line, nursery)
                with trio.move_on_after(EOF_GRACE):
                    while self._running:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()  # past the grace: the commands still running are killed
        finally:
            await stdin.aclose()
            await self._out.aclose()

    async def _send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        try:
            data = text.encode() + b"\n"
        except UnicodeEncodeError:  # a non-UTF-8 file name in a listing, a surrogate echoed back: make it U+FFFD
            data = json.dumps(_valid(message), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        async with self._send_lock:
            try:
                await self._out.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; stdin's EOF ends us

    async def _reply(self, rid: Any, result: dict[str, Any]) -> None:
        await self._send({"jsonrpc": "2.0", "id": rid, "result": result})

    async def _error(self, rid: Any, code: int, message: str) -> None:
        await self._send({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})

    async def _dispatch(self, line: bytes, nursery: trio.Nursery) -> None:
        try:
            msg = json.loads(line)
        except ValueError as exc:
            await self._error(None, PARSE_ERROR, f"not JSON: {exc}")
            return
        if isinstance(msg, list):
            await self._error(None, INVALID_REQUEST, "batches are not supported")
            return
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not isinstance(msg.get("method"), str):
            if isinstance(msg, dict) and ("result" in msg or "error" in msg):
                return  # a response to something we never asked: ignore
            await self._error(msg.get("id") if isinstance(msg, dict) else None, INVALID_REQUEST,
                              "expected a JSON-RPC 2.0 request")
            return
        method, params, is_request = msg["method"], msg.get("params") or {}, "id" in msg
        rid = msg.get("id")
        if is_request and not _valid_id(rid):
            await self._error(None, INVALID_REQUEST, "a request id must be a string or a number")
            return
        if not isinstance(params, dict):
            if is_request:
                await self._error(rid, INVALID_PARAMS, "params must be an object")
            return
        if not is_request:
            if method == "notifications/cancelled":
                target = params.get("requestId")
                scope = self._running.get(target) if _valid_id(target) else None
                if scope is not None:
                    scope.cancel()
            return  # notifications/initialized and others need no answer
        if method == "initialize":
            await self._reply(rid, self._initialize(params))
        elif method == "ping":
            await self._reply(rid, {})
        elif method == "tools/list":
            await self._reply(rid, {"tools": tool_list(self.policy)})
        elif method == "tools/call":
            if rid in self._running:
                await self._error(rid, INVALID_REQUEST, f"request id {rid!r} is already running")
                return
            scope = trio.CancelScope()
            self._running[rid] = scope
            nursery.start_soon(self._call, rid, params, scope)
        elif method in ("resources/list", "prompts/list"):
            await self._reply(rid, {method.split("/")[0]: []})
        else:
            await self._error(rid, METHOD_NOT_FOUND, f"unknown method {method!r}")

    def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        asked = params.get("protocolVersion")
        self.version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("stockade")
        except PackageNotFoundError:
            ours = "0"
        where = f"backend {self.session.backend}" if self.session.backend else "no sandbox (see stockade doctor)"
        return {"protocolVersion": self.version, "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "stockade", "version": ours},
                "instructions": (f"Every tool runs confined by stockade's sandbox: {_describe(self.policy)}, "
                                 f"{where}. Paths are relative to the workspace. Refusals are reported as "
                                 "denials; the policy cannot be changed from here.")}

    async def _call(self, rid: Any, params: dict[str, Any], scope: trio.CancelScope) -> None:
        """Run one tool call under `scope`; the reply is sent outside it, so a cancel never cuts a reply in two."""
        try:
            name, args = params.get("name"), params.get("arguments") or {}
            tool = self._tools.get(name) if isinstance(name, str) else None
            if tool is None:
                await self._error(rid, INVALID_PARAMS, f"unknown tool {name!r}")
                return
            if not isinstance(args, dict):
                await self._error(rid, INVALID_PARAMS, "arguments must be an object")
                return
            result: dict[str, Any] | None = None
            with scope:
                result = await self._run_tool(name, tool, args)
            if scope.cancelled_caught or result is None:
                return  # cancelled: the spec asks for no response
        finally:
            self._running.pop(rid, None)
        if "error" in result:
            await self._error(rid, INTERNAL_ERROR, result["error"])
        else:
            await self._reply(rid, result)

    async def _run_tool(self, name: str, tool: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                        args: dict[str, Any]) -> dict[str, Any]:
        """A tool's result; what went wrong becomes an isError result ({"error": ...} for our own bugs)."""
        if self.setup_error is not None:
            return _result(self.setup_error, error=True)
        bad = _invalid_string(args)
        if bad is not None:
            return _result(f"`{bad}` is not valid Unicode (a lone surrogate): it cannot be run or written", error=True)
        try:
            return await tool(args)
        except Exception as group:  # noqa: BLE001 - one bad call must not end the server
            exc = unwrap_group(group)  # a trio nursery in the session wraps what it raises
            if isinstance(exc, ToolError):
                return _result(str(exc), error=True)
            if isinstance(exc, FileOpError):
                return _result(str(exc) + (f"\n{exc.denial.hint()}" if exc.denial else ""), error=True)
            if isinstance(exc, (SessionError, SandboxSetupError)):
                return _result(f"stockade: {exc}", error=True)
            print(f"stockade mcp: internal error in {name}: {group!r}", file=sys.stderr, flush=True)
            return {"error": f"internal error: {exc}"}

    # -- tools ----------------------------------------------------------------------------------------

    async def _exec(self, args: dict[str, Any]) -> dict[str, Any]:
        command = args.get("command")
        if isinstance(command, str) and command.strip():
            argv = ["sh", "-c", command]
        elif isinstance(command, list) and command and all(isinstance(a, str) for a in command) and command[0]:
            argv = list(command)
        else:
            raise ToolError("`command` must be a non-empty argv list of strings, or a non-empty string")
        workdir = _str(args, "workdir")
        timeout_ms = _int(args, "timeout_ms", 1, 7 * 24 * 3600 * 1000)
        stdin = _str(args, "stdin")
        try:
            r = await self.session.aexec(argv, cwd=workdir, timeout=timeout_ms / 1000 if timeout_ms else None,
                                         stdin=stdin.encode() if stdin is not None else None)
        except SandboxSetupError as exc:  # e.g. a workdir that does not exist: nothing ran
            raise ToolError(str(exc)) from None
        structured = {"exit_code": r.exit_code, "signal": r.signal, "timed_out": r.timed_out,
                      "stdout": _text(r.stdout), "stderr": _text(r.stderr), "stdout_truncated": r.stdout_truncated,
                      "stderr_truncated": r.stderr_truncated, "duration": round(r.duration, 6),
                      "denials": [asdict(d) for d in r.denials]}
        return _result(_exec_text(r), structured, error=not r.ok)

    async def _read_file(self, args: dict[str, Any]) -> dict[str, Any]:
        path = _str(args, "path", required=True)
        limit = _int(args, "max_bytes", 1, MAX_READ) or MAX_READ
        got = await self.session.aread_file(path, limit)  # type: ignore[arg-type]
        if b"\0" in got.data[:8192]:
            raise ToolError(f"{got.path}: a binary file ({got.size} bytes); read_file returns text")
        note = f"\n[... truncated: {got.size} bytes in all ...]" if got.truncated else ""
        return _result(_text(got.data) + note)

    async def _write_file(self, args: dict[str, Any]) -> dict[str, Any]:
        path = _str(args, "path", required=True)
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("`content` must be a string")
        written = await self.session.awrite_file(path, content, parents=_bool(args, "create_dirs"))  # type: ignore[arg-type]
        return _result(f"wrote {written} bytes to {path}")

    async def _list_dir(self, args: dict[str, Any]) -> dict[str, Any]:
        path = _str(args, "path") or "."
        entries = await self.session.alist_dir(path)
        lines = [f"{e.name}{'/' if e.type == 'dir' else ''}\t{e.type}\t{e.size}" for e in entries]
        return _result("\n".join(lines) if lines else "(empty)")

    async def _search(self, args: dict[str, Any]) -> dict[str, Any]:
        pattern = _str(args, "pattern", required=True)
        found = await self.session.asearch(pattern, _str(args, "path") or ".", _str(args, "glob"),  # type: ignore[arg-type]
                                           ignore_case=_bool(args, "ignore_case"),
                                           max_results=_int(args, "max_results", 1, 5000) or 500)
        lines = [f"{m.path}:{m.line}: {m.text}" for m in found.matches]
        tail = f"\n[{found.files_scanned} files searched, {found.files_skipped} skipped" + \
            (", results truncated]" if found.truncated else "]")
        return _result(("\n".join(lines) if lines else "no matches") + tail)


def _valid_id(rid: Any) -> bool:
    """JSON-RPC ids are strings or numbers (MCP: never null); a list or object would not even be hashable."""
    return isinstance(rid, (str, int, float)) and not isinstance(rid, bool)


async def _lines(stream: trio.lowlevel.FdStream) -> Any:
    """Newline-delimited messages; None for one over MAX_LINE (skipped up to its newline)."""
    buf = bytearray()
    skipping = False
    while True:
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            if buf.strip() and not skipping:
                yield bytes(buf)
            return
        buf += chunk
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_LINE and not skipping:
                    skipping = True
                    yield None
                if skipping:
                    buf.clear()
                break
            line = bytes(buf[:end])
            del buf[:end + 1]
            if skipping:
                skipping = False
                continue
            if line.strip():
                yield line


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    import signal

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            print("stockade mcp: stopping (signal)", file=sys.stderr, flush=True)
            scope.cancel()
            return


async def serve(policy: SandboxPolicy, backend: str) -> int:
    """Serve until stdin ends. A sandbox that cannot be set up is reported by every call (and on stderr):
    an MCP client shows a tool's error to its user, not a server that exited.

    The protocol gets its own copy of stdout and fd 1 becomes stderr: a stray print (ours, a library's, a
    child's) then lands in the log instead of corrupting the JSON-RPC stream."""
    sys.stdout.flush()
    out_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    session = Session(policy, backend=backend)
    try:
        error = None
        try:
            await trio.to_thread.run_sync(session.start)
            print(f"stockade mcp: serving on stdio; {_describe(policy)}, backend {session.backend}",
                  file=sys.stderr, flush=True)
        except SandboxSetupError as exc:
            error = f"stockade: the sandbox could not be set up: {exc} (run `stockade doctor`)"
            print(f"stockade mcp: {error}; every call will report it", file=sys.stderr, flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
            await Server(session, policy, error, out_fd).serve()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(session.close)
    return 0

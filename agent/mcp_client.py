"""A minimal MCP client (stdio) whose servers run inside the agent's sandbox.

An MCP server is code the user chose to run, but it acts on what a model
asks: it is started as a command of the agent's confined session, so it gets
exactly the policy every shell command gets (no network unless the policy
allows it, writes only in the writable roots, secrets unreadable), and it
dies with the session. It lives as long as the agent, not as long as one
command: the policy's per-command timeout does not apply to it.

Wire format: newline-delimited JSON-RPC 2.0 on the server's stdin/stdout;
what it prints on stderr is kept (the tail) for error messages.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import trio

PROTOCOL_VERSION = "2025-06-18"
SERVER_LIFETIME = 1e8  # seconds: "as long as the session" for the worker's timeout field
START_TIMEOUT = 30.0
CALL_TIMEOUT = 300.0
MAX_LINE = 16 << 20
STDERR_TAIL = 4000


class McpError(Exception):
    """The server could not be started, broke the protocol, or answered a call with an error."""


@dataclass(frozen=True)
class McpServerSpec:
    """One configured server: `[agent.mcp_servers.NAME]` in the user config."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # relative to the workspace
    start_timeout: float = START_TIMEOUT
    call_timeout: float = CALL_TIMEOUT


@dataclass(frozen=True)
class McpToolInfo:
    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool  # the server's readOnlyHint: a hint only (the sandbox confines the server either way)


def parse_servers(table: Any, source: str) -> list[McpServerSpec]:
    """`[agent.mcp_servers.NAME]` tables of the user config; one `FILE: KEY: REASON` McpError for bad input.

        [agent.mcp_servers.docs]
        command = ["docs-mcp", "--stdio"]            # run inside the sandbox, like every command
        env = { DOCS_LANG = "en" }                   # secret-looking names are dropped (see README)
        cwd = "tools"                                # relative to the workspace (default: the workspace)
        start_timeout = 30                           # seconds for the handshake
        call_timeout = 300                           # seconds per tool call
        enabled = true
    """
    if table is None:
        return []
    if not isinstance(table, dict):
        raise McpError(f"{source}: agent.mcp_servers: expected a table of servers")
    specs = []
    for name, entry in table.items():
        key = f"agent.mcp_servers.{name}"
        if not isinstance(entry, dict):
            raise McpError(f"{source}: {key}: expected a table")
        unknown = set(entry) - {"command", "env", "cwd", "start_timeout", "call_timeout", "enabled"}
        if unknown:
            raise McpError(f"{source}: {key}.{sorted(unknown)[0]}: unknown key (known keys: call_timeout, "
                           "command, cwd, enabled, env, start_timeout)")
        command = entry.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
            raise McpError(f"{source}: {key}.command: expected a non-empty list of strings")
        env = entry.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise McpError(f"{source}: {key}.env: expected a table of strings")
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise McpError(f"{source}: {key}.cwd: expected a string")
        timeouts = {}
        for field_name, default in (("start_timeout", START_TIMEOUT), ("call_timeout", CALL_TIMEOUT)):
            value = entry.get(field_name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86_400:
                raise McpError(f"{source}: {key}.{field_name}: expected seconds in (0, 86400]")
            timeouts[field_name] = float(value)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise McpError(f"{source}: {key}.enabled: expected true or false")
        if enabled:
            specs.append(McpServerSpec(name=str(name), command=tuple(command), env=dict(env), cwd=cwd, **timeouts))
    return specs


class McpClient:
    """One running server. Use `async with McpClient.start(session, spec, nursery)`-style via `start`."""

    def __init__(self, spec: McpServerSpec, proc: Any) -> None:
        self.spec = spec
        self._proc = proc  # sandbox.session.SessionProcess
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._closed = False
        self._stderr = bytearray()
        self.tools: list[McpToolInfo] = []
        self.server_info: dict[str, Any] = {}

    @classmethod
    async def start(cls, session: Any, spec: McpServerSpec, nursery: trio.Nursery) -> McpClient:
        """Spawn the server in `session`, run the handshake and list its tools. Raises McpError."""
        try:
            proc = await session.open_process(list(spec.command), cwd=spec.cwd, env=_env(spec.env), stdin=True,
                                              timeout=SERVER_LIFETIME)
        except OSError as exc:
            raise McpError(f"MCP server {spec.name}: cannot run {spec.command[0]}: {exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001 - SandboxSetupError, SessionError: one line for the user
            raise McpError(f"MCP server {spec.name}: {exc}") from None
        client = cls(spec, proc)
        nursery.start_soon(client._read)
        try:
            with trio.fail_after(spec.start_timeout):
                init = await client.request("initialize", {
                    "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                    "clientInfo": {"name": "stockade", "version": "0"}})
                client.server_info = init.get("serverInfo") or {}
                await client._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                client.tools = await client._list_tools()
        except trio.TooSlowError:
            await client.aclose()
            raise McpError(f"MCP server {spec.name}: no answer to the handshake within {spec.start_timeout:g}s"
                           f"{client._stderr_note()}") from None
        except McpError:
            await client.aclose()
            raise
        return client

    async def _list_tools(self) -> list[McpToolInfo]:
        tools: list[McpToolInfo] = []
        cursor: str | None = None
        for _ in range(100):  # pages; a server that never stops paging is cut off
            page = await self.request("tools/list", {"cursor": cursor} if cursor else {})
            for raw in page.get("tools") or []:
                if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                    continue
                schema = raw.get("inputSchema")
                annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
                tools.append(McpToolInfo(
                    name=raw["name"], description=str(raw.get("description") or raw.get("title") or ""),
                    input_schema=schema if isinstance(schema, dict) else {"type": "object"},
                    read_only=annotations.get("readOnlyHint") is True))
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return tools

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """`tools/call`: the result object ({content, structuredContent?, isError}). Raises McpError."""
        try:
            with trio.fail_after(self.spec.call_timeout):
                return await self.request("tools/call", {"name": tool, "arguments": arguments})
        except trio.TooSlowError:
            raise McpError(f"MCP server {self.spec.name}: {tool} did not answer within "
                           f"{self.spec.call_timeout:g}s") from None

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise McpError(f"MCP server {self.spec.name} is not running{self._stderr_note()}")
        rid = next(self._ids)
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[rid] = send
        try:
            await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            try:
                reply = await recv.receive()
            except trio.EndOfChannel:
                raise McpError(f"MCP server {self.spec.name} exited{self._stderr_note()}") from None
        except BaseException:
            if rid in self._waiting and not self._closed:  # cancelled: tell the server to stop working on it
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                      "params": {"requestId": rid, "reason": "cancelled by the agent"}})
            raise
        finally:
            self._waiting.pop(rid, None)
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {"message": str(reply["error"])}
            raise McpError(f"MCP server {self.spec.name}: {method} failed: {err.get('message', err)}")
        result = reply.get("result")
        if not isinstance(result, dict):
            raise McpError(f"MCP server {self.spec.name}: {method} answered without a result object")
        return result

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._proc.send_stdin(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._closed = True
            raise McpError(f"MCP server {self.spec.name} is not reading its input{self._stderr_note()}") from None

    async def _read(self) -> None:
        """Route replies to their requests; answer the server's own requests with 'not supported'."""
        buf = bytearray()
        try:
            async for stream, chunk in self._proc.output():
                if stream == "stderr":
                    self._stderr += chunk
                    del self._stderr[:-STDERR_TAIL]
                    continue
                buf += chunk
                while (end := buf.find(b"\n")) >= 0:
                    line, buf = bytes(buf[:end]), buf[end + 1:]
                    await self._handle(line)
                if len(buf) > MAX_LINE:
                    buf.clear()  # a runaway line: dropped; its request, if any, times out
        finally:
            self._closed = True
            for send in list(self._waiting.values()):
                send.close()

    async def _handle(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return  # noise on stdout (a badly behaved server): ignored
        if not isinstance(msg, dict):
            return
        if "method" in msg:
            if "id" in msg:  # sampling, roots, elicitation: not offered (our capabilities are empty)
                await self._send({"jsonrpc": "2.0", "id": msg["id"],
                                  "error": {"code": -32601, "message": "not supported by this client"}})
            return
        send = self._waiting.get(msg.get("id")) if isinstance(msg.get("id"), int) else None
        if send is not None:
            try:
                send.send_nowait(msg)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _stderr_note(self) -> str:
        text = self._stderr.decode("utf-8", "replace").strip()
        return f" (its stderr: {text[-500:]})" if text else ""

    async def aclose(self) -> None:
        """Close its stdin (the spec's shutdown), then kill it if it lingers; the sandbox kills its tree."""
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                await self._proc.close_stdin()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            with trio.move_on_after(2) as waited:
                await self._proc.wait()
            if waited.cancelled_caught:
                await self._proc.kill()
                with trio.move_on_after(5):
                    await self._proc.wait()


def _env(extra: dict[str, str]) -> dict[str, str] | None:
    """The server's caller env: ours plus its configured variables. The policy filters it like any command's:
    secret-looking names are dropped unless the policy passes them, because every command of the session can
    read the server's environment (same sandbox, same user)."""
    if not extra:
        return None
    import os

    return {**os.environ, **extra}


_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, tool: str) -> str:
    """`mcp__SERVER__TOOL`, in the characters and length model APIs accept for tool names."""
    import hashlib

    name = f"mcp__{_TOOL_NAME.sub('_', server)}__{_TOOL_NAME.sub('_', tool)}"
    return name if len(name) <= 64 else name[:55] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]

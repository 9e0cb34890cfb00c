"""Fake model servers: real HTTP on 127.0.0.1, each provider's real SSE wire format.

Tests of the model clients and of the agent end to end talk to these through
real sockets, so framing, chunking, retries and timeouts are exercised the way
a real provider would exercise them. Nothing here imports the client code.

    with FakeModelServer("anthropic", [Reply(tool_calls=[ToolCallSpec("shell", {"cmd": "ls"})]),
                                       Reply(text="done")]) as server:
        client = AnthropicClient(model="m", base_url=server.base_url, api_key="k")
        ...
        assert server.requests[1]["messages"][-1]["content"][0]["type"] == "tool_result"

Import with `from fake_servers import ...` (tests/ directories are not packages here:
a `tests/agent/__init__.py` would make pytest name the test modules `agent.*` and
shadow the real `agent` package).
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeAlias

Provider = Literal["chat", "responses", "anthropic"]
StopName = Literal["end_turn", "tool_use", "max_tokens", "content_filter", "refusal"]

# -- script steps -------------------------------------------------------------------------------------


@dataclass
class ToolCallSpec:
    """A tool call the fake model makes. `arguments` may be a dict (dumped to JSON) or raw text."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None  # generated (call_N / toolu_N) when None

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """A successful streamed reply.

    Text is split into `text_chunk`-sized deltas and tool-call arguments into
    `args_chunk`-sized fragments (None: the whole arguments in one event), so
    clients must reassemble. `stop` defaults to tool_use when there are tool
    calls, else end_turn. `reasoning` becomes a thinking block (Anthropic,
    with a signature), a reasoning item with encrypted content (Responses) or
    `reasoning_content` deltas (Chat). `repeat_ids` makes the Chat format
    repeat id/name in every tool-call fragment, as some local servers do.
    """

    text: str = ""
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    stop: StopName | None = None
    usage: Any = None  # Mapping or object with input_tokens / output_tokens / cached_input_tokens
    reasoning: str = ""
    text_chunk: int = 4
    args_chunk: int | None = 5
    repeat_ids: bool = False
    model: str = "fake-model"

    def stop_reason(self) -> str:
        return self.stop or ("tool_use" if self.tool_calls else "end_turn")

    def usage_numbers(self) -> tuple[int, int, int]:
        u = self.usage
        if u is None:
            return 11, 7, 0
        if isinstance(u, Mapping):
            return int(u.get("input_tokens", 0)), int(u.get("output_tokens", 0)), int(u.get("cached_input_tokens", 0))
        return int(u.input_tokens), int(u.output_tokens), int(getattr(u, "cached_input_tokens", 0))


@dataclass
class Fault:
    """An HTTP error response. `body` None: the provider's usual error JSON for `status`."""

    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None  # used in the default body


@dataclass
class ContextOverflow:
    """The provider's real "prompt too long" error (400; Anthropic's or OpenAI's body)."""

    status: int = 400


@dataclass
class CutStream:
    """Send `after_events` SSE events of `reply`, then reset the connection (TCP RST)."""

    after_events: int = 2
    reply: Reply = field(default_factory=lambda: Reply(text="this reply is cut off in the middle"))


@dataclass
class IdleStream:
    """Send `after_events` events, go silent for `seconds`, then send the rest (if the client still listens)."""

    after_events: int = 2
    seconds: float = 5.0
    reply: Reply = field(default_factory=lambda: Reply(text="this reply stalls in the middle"))


@dataclass
class Malformed:
    """A broken 200 stream: `kind="bad_json"` puts invalid JSON in a data line after
    `after_events` events; `kind="no_terminal"` ends the stream cleanly but without
    its terminal event (`[DONE]` / finish chunk, `response.completed`, `message_stop`)."""

    kind: Literal["bad_json", "no_terminal"] = "bad_json"
    after_events: int = 2
    reply: Reply = field(default_factory=lambda: Reply(text="this reply is broken"))


@dataclass
class StreamError:
    """HTTP 200, `after_events` events, then the provider's in-stream error event
    (Anthropic `event: error`, Responses `response.failed`, Chat `data: {"error": ...}`)."""

    error_type: str | None = None  # Anthropic error type / OpenAI error code; None: overloaded_error / server_error
    message: str = "Overloaded"
    after_events: int = 1
    reply: Reply = field(default_factory=lambda: Reply(text="partial"))


@dataclass
class RawStream:
    """Exactly these SSE events (name or None, data text) with HTTP 200: for quirky-server cases."""

    events: list[tuple[str | None, str]]


Step: TypeAlias = (Reply | Fault | ContextOverflow | CutStream | IdleStream | Malformed | StreamError | RawStream
                   | Callable[[dict[str, Any]], "Step"])


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]
    at: float  # time.monotonic() when the request arrived
    client_port: int = 0  # the same port on consecutive requests: the client reused its connection


# -- wire encoders --------------------------------------------------------------------------------------

SSE = tuple[str | None, str]  # (event name or None, data line)


def _chunks(text: str, size: int | None) -> list[str]:
    if not text:
        return []
    if size is None or size <= 0:
        return [text]
    return [text[i:i + size] for i in range(0, len(text), size)]


def _calls_with_ids(reply: Reply, prefix: str, counter: Iterator[int]) -> list[tuple[str, ToolCallSpec]]:
    return [(tc.id or f"{prefix}{next(counter)}", tc) for tc in reply.tool_calls]


def chat_events(reply: Reply, counter: Iterator[int]) -> list[SSE]:
    """Chat Completions chunks; the terminal part is the finish chunk, usage chunk and [DONE]."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": reply.model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> SSE:
        return None, json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"reasoning_content": piece}) for piece in _chunks(reply.reasoning, reply.text_chunk)]
    out += [chunk({"content": piece}) for piece in _chunks(reply.text, reply.text_chunk)]
    for index, (call_id, tc) in enumerate(_calls_with_ids(reply, "call_", counter)):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": tc.name, "arguments": ""}}
        pieces = _chunks(tc.arguments_text(), reply.args_chunk)
        if reply.args_chunk is None:
            head["function"]["arguments"] = tc.arguments_text()
            pieces = []
        out.append(chunk({"tool_calls": [head]}))
        for piece in pieces:
            frag: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
            if reply.repeat_ids:
                frag = {"index": index, "id": call_id, "type": "function",
                        "function": {"name": tc.name, "arguments": piece}}
            out.append(chunk({"tool_calls": [frag]}))
    finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length",
              "content_filter": "content_filter", "refusal": "stop"}[reply.stop_reason()]
    out.append(chunk({}, finish))
    inp, outp, cached = reply.usage_numbers()
    out.append((None, json.dumps({**base, "choices": [], "usage": {
        "prompt_tokens": inp, "completion_tokens": outp, "total_tokens": inp + outp,
        "prompt_tokens_details": {"cached_tokens": cached}}})))
    out.append((None, "[DONE]"))
    return out


def responses_events(reply: Reply, counter: Iterator[int]) -> list[SSE]:
    """Responses API events; the terminal one is response.completed (or response.incomplete)."""
    seq = itertools.count()
    resp_id = f"resp_fake{next(counter)}"
    out: list[SSE] = []

    def ev(kind: str, **payload: Any) -> None:
        out.append((kind, json.dumps({"type": kind, "sequence_number": next(seq), **payload})))

    shell = {"id": resp_id, "object": "response", "model": reply.model, "status": "in_progress", "output": []}
    ev("response.created", response=shell)
    ev("response.in_progress", response=shell)
    output: list[dict[str, Any]] = []
    if reply.reasoning:
        idx, item_id = len(output), f"rs_fake{next(counter)}"
        ev("response.output_item.added", output_index=idx, item={"id": item_id, "type": "reasoning", "summary": []})
        for piece in _chunks(reply.reasoning, reply.text_chunk):
            ev("response.reasoning_summary_text.delta", item_id=item_id, output_index=idx, summary_index=0,
               delta=piece)
        item = {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": reply.reasoning}],
                "encrypted_content": f"ENC[{reply.reasoning}]"}
        ev("response.output_item.done", output_index=idx, item=item)
        output.append(item)
    if reply.text:
        idx, item_id = len(output), f"msg_fake{next(counter)}"
        ev("response.output_item.added", output_index=idx,
           item={"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []})
        ev("response.content_part.added", item_id=item_id, output_index=idx, content_index=0,
           part={"type": "output_text", "text": "", "annotations": []})
        for piece in _chunks(reply.text, reply.text_chunk):
            ev("response.output_text.delta", item_id=item_id, output_index=idx, content_index=0, delta=piece)
        ev("response.output_text.done", item_id=item_id, output_index=idx, content_index=0, text=reply.text)
        part = {"type": "output_text", "text": reply.text, "annotations": []}
        ev("response.content_part.done", item_id=item_id, output_index=idx, content_index=0, part=part)
        item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        ev("response.output_item.done", output_index=idx, item=item)
        output.append(item)
    for call_id, tc in _calls_with_ids(reply, "call_", counter):
        idx, item_id = len(output), f"fc_fake{next(counter)}"
        args = tc.arguments_text()
        ev("response.output_item.added", output_index=idx, item={
            "id": item_id, "type": "function_call", "status": "in_progress", "call_id": call_id, "name": tc.name,
            "arguments": ""})
        for piece in _chunks(args, reply.args_chunk):
            ev("response.function_call_arguments.delta", item_id=item_id, output_index=idx, delta=piece)
        ev("response.function_call_arguments.done", item_id=item_id, output_index=idx, arguments=args)
        item = {"id": item_id, "type": "function_call", "status": "completed", "call_id": call_id, "name": tc.name,
                "arguments": args}
        ev("response.output_item.done", output_index=idx, item=item)
        output.append(item)
    inp, outp, cached = reply.usage_numbers()
    usage = {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": outp,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + outp}
    stop = reply.stop_reason()
    if stop in ("max_tokens", "content_filter"):
        reason = "max_output_tokens" if stop == "max_tokens" else "content_filter"
        ev("response.incomplete", response={**shell, "status": "incomplete", "output": output, "usage": usage,
                                            "incomplete_details": {"reason": reason}})
    else:
        ev("response.completed", response={**shell, "status": "completed", "output": output, "usage": usage})
    return out


def anthropic_events(reply: Reply, counter: Iterator[int]) -> list[SSE]:
    """Anthropic Messages events; the terminal one is message_stop."""
    out: list[SSE] = []

    def ev(kind: str, **payload: Any) -> None:
        out.append((kind, json.dumps({"type": kind, **payload})))

    inp, outp, cached = reply.usage_numbers()
    ev("message_start", message={
        "id": f"msg_fake{next(counter)}", "type": "message", "role": "assistant", "model": reply.model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": 1, "cache_read_input_tokens": cached,
                  "cache_creation_input_tokens": 0}})
    ev("ping")
    index = 0
    if reply.reasoning:
        ev("content_block_start", index=index, content_block={"type": "thinking", "thinking": "", "signature": ""})
        for piece in _chunks(reply.reasoning, reply.text_chunk):
            ev("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
        signature = f"SIG[{reply.reasoning}]"
        ev("content_block_delta", index=index, delta={"type": "signature_delta", "signature": signature})
        ev("content_block_stop", index=index)
        index += 1
    if reply.text:
        ev("content_block_start", index=index, content_block={"type": "text", "text": ""})
        for piece in _chunks(reply.text, reply.text_chunk):
            ev("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        ev("content_block_stop", index=index)
        index += 1
    for call_id, tc in _calls_with_ids(reply, "toolu_", counter):
        ev("content_block_start", index=index, content_block={"type": "tool_use", "id": call_id, "name": tc.name,
                                                              "input": {}})
        ev("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": ""})
        for piece in _chunks(tc.arguments_text(), reply.args_chunk):
            ev("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": piece})
        ev("content_block_stop", index=index)
        index += 1
    ev("message_delta", delta={"stop_reason": reply.stop_reason(), "stop_sequence": None},
       usage={"output_tokens": outp})
    ev("message_stop")
    return out


_ENCODERS: dict[str, Callable[[Reply, Iterator[int]], list[SSE]]] = {
    "chat": chat_events, "responses": responses_events, "anthropic": anthropic_events}

_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                          500: "api_error", 529: "overloaded_error"}
_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                       404: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error"}


def error_body(provider: Provider, status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body a real provider sends with an HTTP error status."""
    message = message or f"fake server error {status}"
    if provider == "anthropic":
        kind = code or _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def overflow_body(provider: Provider) -> dict[str, Any]:
    if provider == "anthropic":
        return error_body(provider, 400, "prompt is too long: 210000 tokens > 200000 maximum")
    return error_body(provider, 400, "This model's maximum context length is 128000 tokens. However, your messages "
                      "resulted in 130512 tokens. Please reduce the length of the messages.",
                      code="context_length_exceeded")


def stream_error_event(provider: Provider, error_type: str | None, message: str) -> SSE:
    error_type = error_type or ("overloaded_error" if provider == "anthropic" else "server_error")
    if provider == "anthropic":
        return "error", json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    if provider == "responses":
        return "response.failed", json.dumps({"type": "response.failed", "response": {
            "id": "resp_failed", "object": "response", "status": "failed", "output": [],
            "error": {"code": error_type, "message": message}}})
    return None, json.dumps({"error": {"message": message, "type": error_type, "code": error_type}})


async def collect(stream: Any) -> list[Any]:
    """Every event of a client's `stream(request)` (raises what the stream raises)."""
    return [event async for event in stream]


# -- the server ------------------------------------------------------------------------------------------


class _StopServing(Exception):
    pass


class FakeModelServer:
    """A scripted model server speaking one provider's wire format over real HTTP.

    Each request consumes one step of `script`, in order. A callable step gets
    the request body (a dict) and returns the step to play. When the script
    runs out the server answers 500 with "script exhausted" (and
    `x-should-retry: false`), so a test that loops forever fails instead of hanging.
    """

    def __init__(self, provider: Provider, script: list[Step] | None = None) -> None:
        if provider not in _ENCODERS:
            raise ValueError(f"provider must be one of {sorted(_ENCODERS)}, not {provider!r}")
        self.provider: Provider = provider
        self.script: list[Step] = list(script or [])
        self.log: list[RecordedRequest] = []
        self.errors: list[str] = []  # problems on the server side (bad request JSON, unknown path)
        self._cond = threading.Condition()
        self._next_step = 0
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # public view -------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """JSON bodies received, in order."""
        with self._cond:
            return [r.body for r in self.log]

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client takes as its base URL: `.../v1` for OpenAI formats, the root for Anthropic."""
        return self.root_url if self.provider == "anthropic" else self.root_url + "/v1"

    def add(self, *steps: Step) -> None:
        """Append steps to the script (also while serving)."""
        with self._cond:
            self.script.extend(steps)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until `n` requests have arrived (for threads; in trio use `await_requests`)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.log) >= n, timeout):
                raise TimeoutError(f"fake server saw {len(self.log)} requests, expected {n}")
            return [r.body for r in self.log]

    async def await_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        import trio

        with trio.fail_after(timeout):
            while len(self.log) < n:
                await trio.sleep(0.01)
        return self.requests

    # lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> FakeModelServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.provider}-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # used by the handler -----------------------------------------------------------------------------

    def _take(self, record: RecordedRequest) -> Step | None:
        with self._cond:
            self.log.append(record)
            self._cond.notify_all()
            if self._next_step >= len(self.script):
                return None
            step = self.script[self._next_step]
            self._next_step += 1
        while callable(step) and not isinstance(step, type):
            step = step(record.body)
        return step

    def _events(self, reply: Reply) -> list[SSE]:
        return _ENCODERS[self.provider](reply, self._ids)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeModelServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
        pass

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"fake server: no GET route {self.path}"}})

    def do_POST(self) -> None:
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            fake.errors.append(f"request body is not JSON: {raw[:200]!r}")
            body = {"_raw": raw.decode("utf-8", "replace")}
        expected = {"chat": "/chat/completions", "responses": "/responses", "anthropic": "/v1/messages"}[fake.provider]
        if not self.path.rstrip("/").endswith(expected):
            fake.errors.append(f"unexpected path {self.path} (expected ...{expected})")
            self._send_json(404, error_body(fake.provider, 404, f"fake {fake.provider} server: no route {self.path}"))
            return
        record = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(),
                                 self.client_address[1])
        step = fake._take(record)
        try:
            self._play(step)
        except (BrokenPipeError, ConnectionResetError, _StopServing, OSError):
            self.close_connection = True

    # steps -----------------------------------------------------------------------------------------------

    def _play(self, step: Step | None) -> None:
        fake = self.fake
        if step is None:
            n = len(fake.log)
            msg = (f"FakeModelServer({fake.provider}): script exhausted: request #{n} but only "
                   f"{len(fake.script)} step(s) scripted")
            self._send_json(500, error_body(fake.provider, 500, msg), {"x-should-retry": "false"})
        elif isinstance(step, Reply):
            self._stream(fake._events(step))
        elif isinstance(step, Fault):
            body = step.body if step.body is not None else error_body(fake.provider, step.status, step.message)
            self._send_json(step.status, body, step.headers)
        elif isinstance(step, ContextOverflow):
            self._send_json(step.status, overflow_body(fake.provider))
        elif isinstance(step, CutStream):
            events = fake._events(step.reply)
            self._stream(events[:min(step.after_events, len(events) - 1)], finish=False)
            time.sleep(0.05)  # let the client read what was sent, so the cut lands mid-stream
            self._reset()
        elif isinstance(step, IdleStream):
            events = fake._events(step.reply)
            cut = min(step.after_events, len(events) - 1)
            self._stream(events[:cut], finish=False)
            if fake._closing.wait(step.seconds):
                self._reset()
                return
            self._stream(events[cut:], start=False)
        elif isinstance(step, Malformed):
            events = fake._events(step.reply)
            if step.kind == "bad_json":
                cut = min(step.after_events, len(events) - 1)
                name = events[cut][0]
                self._stream([*events[:cut], (name, '{"type": "oops", "truncated": ')])
            else:
                self._stream(_without_terminal(fake.provider, events))
        elif isinstance(step, RawStream):
            self._stream(list(step.events))
        elif isinstance(step, StreamError):
            events = fake._events(step.reply)
            cut = min(step.after_events, len(events) - 1)
            self._stream([*events[:cut], stream_error_event(fake.provider, step.error_type, step.message)])
        else:
            raise TypeError(f"not a fake server step: {step!r}")

    # wire helpers --------------------------------------------------------------------------------------------

    def _send_json(self, status: int, body: dict[str, Any] | str, headers: Mapping[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, events: list[SSE], *, start: bool = True, finish: bool = True) -> None:
        """Write events as SSE over chunked encoding, one chunk per event (flushed, so deltas arrive apart)."""
        if start:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        for name, data in events:
            text = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
            self._chunk(text.encode())
        if finish:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST, the way a dropped proxy connection looks to the client."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        raise _StopServing


def _without_terminal(provider: Provider, events: list[SSE]) -> list[SSE]:
    if provider == "chat":  # drop the finish chunk, the usage chunk and [DONE]
        return events[:-3]
    return events[:-1]  # response.completed / message_stop

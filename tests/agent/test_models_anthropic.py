"""Anthropic Messages client against the fake server: blocks, thinking, alternation, request shape."""

from __future__ import annotations

import itertools
import json

from fake_servers import FakeModelServer, RawStream, Reply, ToolCallSpec, collect

from agent.items import AssistantMessage, Summary, ToolCall, ToolResult, UserMessage
from agent.models.base import Completed, ModelRequest, ReasoningDelta, TextDelta, ToolCallStarted, ToolSpec

TOOLS = [ToolSpec("shell", "Run a command", {"type": "object", "properties": {"command": {"type": "string"}}})]
REQUEST = ModelRequest(system="you are terse", items=[UserMessage(text="hi")], tools=TOOLS)


def done(events: list) -> Completed:
    assert isinstance(events[-1], Completed)
    return events[-1]


async def test_text_and_parallel_tool_calls_split_json(client_for) -> None:
    calls = [ToolCallSpec("shell", {"command": "ls -la /tmp"}, id="toolu_1"),
             ToolCallSpec("read_file", {"path": "src/main.py", "limit": 20}, id="toolu_2")]
    usage = {"input_tokens": 300, "output_tokens": 40, "cached_input_tokens": 200}
    with FakeModelServer("anthropic", [Reply(text="Checking both.", tool_calls=calls, args_chunk=2, usage=usage)]) as s:
        events = await collect(client_for(s).stream(REQUEST))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Checking both."
    assert [e for e in events if isinstance(e, ToolCallStarted)] == [ToolCallStarted("toolu_1", "shell"),
                                                                      ToolCallStarted("toolu_2", "read_file")]
    result = done(events)
    assert result.stop_reason == "tool_use" and result.message.text == "Checking both."
    assert [json.loads(c.arguments) for c in result.message.tool_calls] == [c.arguments for c in calls]
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_input_tokens) == (300, 40, 200)


async def test_stop_reasons(client_for) -> None:
    script = [Reply(text="a", stop="max_tokens"), Reply(text="b", stop="refusal"), Reply(text="c")]
    with FakeModelServer("anthropic", script) as server:
        client = client_for(server)
        reasons = [done(await collect(client.stream(REQUEST))).stop_reason for _ in range(3)]
    assert reasons == ["max_tokens", "refusal", "end_turn"]


async def test_thinking_with_signature_is_kept_and_sent_back_first(client_for) -> None:
    with FakeModelServer("anthropic", [Reply(reasoning="I should run ls", tool_calls=[ToolCallSpec("shell", {})]),
                                       Reply(text="done")]) as server:
        client = client_for(server)
        events = await collect(client.stream(REQUEST))
        assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "I should run ls"
        first = done(events)
        assert first.message.opaque == [{"provider": "anthropic", "block": {
            "type": "thinking", "thinking": "I should run ls", "signature": "SIG[I should run ls]"}}]
        call = first.message.tool_calls[0]
        items = [*REQUEST.items, first.message, ToolResult(call_id=call.id, name="shell", output="x")]
        await collect(client.stream(ModelRequest(system="s", items=items, tools=TOOLS)))
    assistant = server.requests[1]["messages"][1]
    assert assistant["role"] == "assistant"
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    assert assistant["content"][0]["signature"] == "SIG[I should run ls]"


async def test_request_shape_alternation_and_tool_results(client_for) -> None:
    items = [
        UserMessage(text="list files"),
        AssistantMessage(text="Looking.", tool_calls=[ToolCall(id="call_a", name="shell", arguments='{"command":"ls"}'),
                                                      ToolCall(id="call.b/1", name="read_file", arguments="not json")],
                         opaque=[{"provider": "openai-responses", "item": {"type": "reasoning"}}]),
        ToolResult(call_id="call_a", name="shell", output="a.txt"),
        ToolResult(call_id="call.b/1", name="read_file", output="", is_error=True),
        UserMessage(text="steering: also check b"),
        AssistantMessage(text="Two files."),
        Summary(text="SUMMARY"),
        UserMessage(text="next"),
    ]
    request = ModelRequest(system="SYS", items=items, tools=TOOLS)
    with FakeModelServer("anthropic", [Reply(text="ok")]) as server:
        await collect(client_for(server, api_key="ak-test").stream(request))
    record = server.log[0]
    assert record.path == "/v1/messages"
    assert record.headers["x-api-key"] == "ak-test" and record.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in record.headers
    body = record.body
    assert body["system"] == "SYS" and body["max_tokens"] == 8192 and body["stream"] is True
    assert body["tools"] == [{"name": "shell", "description": "Run a command", "input_schema": TOOLS[0].parameters}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "list files"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "call_a", "name": "shell", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "call_b_1", "name": "read_file", "input": {"_raw_arguments": "not json"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "a.txt", "is_error": False},
            {"type": "tool_result", "tool_use_id": "call_b_1", "content": "(no output)", "is_error": True},
            {"type": "text", "text": "steering: also check b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two files."}]},
        {"role": "user", "content": [{"type": "text", "text": "SUMMARY"}, {"type": "text", "text": "next"}]},
    ]
    roles = [m["role"] for m in body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))


async def test_max_output_tokens_from_request(client_for) -> None:
    with FakeModelServer("anthropic", [Reply(text="ok")]) as server:
        await collect(client_for(server).stream(ModelRequest(system="", items=[UserMessage(text="x")],
                                                             max_output_tokens=64)))
    body = server.requests[0]
    assert body["max_tokens"] == 64 and "system" not in body and "tools" not in body


async def test_tool_use_with_input_in_start_block_and_redacted_thinking(client_for) -> None:
    def ev(kind: str, **payload: object) -> tuple[str, str]:
        return kind, json.dumps({"type": kind, **payload})

    events = [
        ev("message_start", message={"usage": {"input_tokens": 5, "output_tokens": 1}}),
        ev("content_block_start", index=0, content_block={"type": "redacted_thinking", "data": "opaque-bytes"}),
        ev("content_block_stop", index=0),
        ev("content_block_start", index=1, content_block={"type": "tool_use", "id": "toolu_9", "name": "shell",
                                                          "input": {"command": "ls"}}),
        ev("content_block_stop", index=1),
        ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 12}),
        ev("message_stop"),
    ]
    with FakeModelServer("anthropic", [RawStream(events)]) as server:
        result = done(await collect(client_for(server).stream(REQUEST)))
    assert result.message.tool_calls == [ToolCall(id="toolu_9", name="shell", arguments='{"command": "ls"}')]
    assert result.message.opaque == [{"provider": "anthropic", "block": {"type": "redacted_thinking",
                                                                           "data": "opaque-bytes"}}]
    assert result.usage.output_tokens == 12

"""Responses API client against the fake server: events, reasoning items, request shape."""

from __future__ import annotations

import json

from fake_servers import FakeModelServer, Reply, ToolCallSpec, collect

from agent.items import AssistantMessage, Summary, ToolCall, ToolResult, UserMessage
from agent.models.base import Completed, ModelRequest, ReasoningDelta, TextDelta, ToolCallStarted, ToolSpec

TOOLS = [ToolSpec("shell", "Run a command", {"type": "object", "properties": {"command": {"type": "string"}}})]
REQUEST = ModelRequest(system="you are terse", items=[UserMessage(text="hi")], tools=TOOLS)


def done(events: list) -> Completed:
    assert isinstance(events[-1], Completed)
    return events[-1]


async def test_text_and_parallel_tool_calls(client_for) -> None:
    calls = [ToolCallSpec("shell", {"command": "ls"}, id="call_1"),
             ToolCallSpec("shell", {"command": "pwd"}, id="call_2")]
    usage = {"input_tokens": 100, "output_tokens": 20, "cached_input_tokens": 64}
    reply = Reply(text="Two commands.", tool_calls=calls, args_chunk=2, usage=usage)
    with FakeModelServer("responses", [reply]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Two commands."
    assert [e for e in events if isinstance(e, ToolCallStarted)] == [ToolCallStarted("call_1", "shell"),
                                                                      ToolCallStarted("call_2", "shell")]
    result = done(events)
    assert result.stop_reason == "tool_use"
    assert [(c.id, json.loads(c.arguments)) for c in result.message.tool_calls] == [
        ("call_1", {"command": "ls"}), ("call_2", {"command": "pwd"})]
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_input_tokens) == (100, 20, 64)


async def test_incomplete_means_max_tokens(client_for) -> None:
    with FakeModelServer("responses", [Reply(text="trunc", stop="max_tokens"),
                                       Reply(text="no", stop="content_filter")]) as server:
        client = client_for(server)
        first = done(await collect(client.stream(REQUEST)))
        second = done(await collect(client.stream(REQUEST)))
    assert (first.stop_reason, first.message.text) == ("max_tokens", "trunc")
    assert second.stop_reason == "content_filter"


async def test_reasoning_items_are_kept_and_sent_back_without_ids(client_for) -> None:
    with FakeModelServer("responses", [Reply(reasoning="plan: run ls", tool_calls=[ToolCallSpec("shell", {})]),
                                       Reply(text="done")]) as server:
        client = client_for(server, model="o4-mini")
        events = await collect(client.stream(REQUEST))
        assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "plan: run ls"
        first = done(events)
        [entry] = first.message.opaque
        assert entry["provider"] == "openai-responses"
        assert entry["item"]["encrypted_content"] == "ENC[plan: run ls]" and "id" not in entry["item"]
        call = first.message.tool_calls[0]
        items = [*REQUEST.items, first.message, ToolResult(call_id=call.id, name="shell", output="a b c")]
        await collect(client.stream(ModelRequest(system="s", items=items, tools=TOOLS)))
    body = server.requests[1]
    assert body["include"] == ["reasoning.encrypted_content"]
    types = [i["type"] for i in body["input"]]
    assert types == ["message", "reasoning", "function_call", "function_call_output"]
    assert body["input"][1] == entry["item"]
    assert body["input"][3] == {"type": "function_call_output", "call_id": call.id, "output": "a b c"}


async def test_foreign_opaque_entries_are_ignored(client_for) -> None:
    message = AssistantMessage(text="hi", opaque=[{"provider": "anthropic", "block": {"type": "thinking"}}])
    request = ModelRequest(system="", items=[UserMessage(text="a"), message, UserMessage(text="b")])
    with FakeModelServer("responses", [Reply(text="ok")]) as server:
        await collect(client_for(server, model="gpt-4.1").stream(request))
    body = server.requests[0]
    assert [i["type"] for i in body["input"]] == ["message", "message", "message"]
    assert "include" not in body and "instructions" not in body and "tools" not in body


async def test_request_shape_for_history(client_for) -> None:
    items = [
        UserMessage(text="list files"),
        AssistantMessage(text="Looking.",
                         tool_calls=[ToolCall(id="call_a", name="shell", arguments='{"command":"ls"}')]),
        ToolResult(call_id="call_a", name="shell", output="a.txt", is_error=False),
        Summary(text="SUMMARY"),
    ]
    request = ModelRequest(system="SYS", items=items, tools=TOOLS, max_output_tokens=500)
    with FakeModelServer("responses", [Reply(text="ok")]) as server:
        await collect(client_for(server, api_key="sk-r").stream(request))
    body = server.requests[0]
    assert server.log[0].path == "/v1/responses"
    assert server.log[0].headers["authorization"] == "Bearer sk-r"
    assert body["instructions"] == "SYS" and body["stream"] is True and body["store"] is False
    assert body["max_output_tokens"] == 500
    assert body["tools"] == [{"type": "function", "name": "shell", "description": "Run a command",
                              "parameters": TOOLS[0].parameters, "strict": False}]
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
        {"type": "function_call", "call_id": "call_a", "name": "shell", "arguments": '{"command":"ls"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "a.txt"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "SUMMARY"}]},
    ]

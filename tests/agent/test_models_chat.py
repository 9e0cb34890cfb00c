"""Chat Completions client against the fake server: streaming assembly, quirks of local servers, request shape."""

from __future__ import annotations

import json

import pytest
from fake_servers import FakeModelServer, RawStream, Reply, ToolCallSpec, collect

from agent.items import AssistantMessage, Summary, ToolCall, ToolResult, UserMessage
from agent.models import make_client
from agent.models.base import (
    Completed,
    ModelError,
    ModelRequest,
    ReasoningDelta,
    TextDelta,
    ToolCallStarted,
    ToolSpec,
)
from agent.models.config import resolve_config
from agent.models.retry import RetryPolicy

TOOLS = [ToolSpec("shell", "Run a command", {"type": "object", "properties": {"command": {"type": "string"}}})]
REQUEST = ModelRequest(system="you are terse", items=[UserMessage(text="hi")], tools=TOOLS)

HISTORY = [
    UserMessage(text="list files"),
    AssistantMessage(text="Looking.", tool_calls=[ToolCall(id="call_a", name="shell", arguments='{"command": "ls"}'),
                                                  ToolCall(id="call_b", name="read_file", arguments='{"path": "x"}')]),
    ToolResult(call_id="call_a", name="shell", output="a.txt\nb.txt"),
    ToolResult(call_id="call_b", name="read_file", output="no such file", is_error=True),
    AssistantMessage(text="Two files."),
    Summary(text="SUMMARY: listed files"),
    UserMessage(text="next task"),
]


def done(events: list) -> Completed:
    assert isinstance(events[-1], Completed)
    return events[-1]


async def test_text_is_streamed_in_pieces_and_assembled(client_for) -> None:
    text = "Hello there, this answer arrives in many small pieces."
    with FakeModelServer("chat", [Reply(text=text, text_chunk=3, usage={"input_tokens": 42, "output_tokens": 9,
                                                                        "cached_input_tokens": 5})]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 10 and "".join(deltas) == text
    result = done(events)
    assert result.message.text == text and result.stop_reason == "end_turn"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_input_tokens) == (42, 9, 5)


async def test_tool_call_arguments_split_across_chunks(client_for) -> None:
    args = {"command": "grep -rn 'needle' src/ | head -50", "timeout": 30}
    with FakeModelServer("chat", [Reply(tool_calls=[ToolCallSpec("shell", args, id="call_xyz")], args_chunk=3)]) as s:
        events = await collect(client_for(s).stream(REQUEST))
    assert ToolCallStarted("call_xyz", "shell") in events
    result = done(events)
    assert result.stop_reason == "tool_use"
    [call] = result.message.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("call_xyz", "shell", args)


async def test_parallel_tool_calls_with_text(client_for) -> None:
    calls = [ToolCallSpec("shell", {"command": f"echo {i}"}) for i in range(3)]
    with FakeModelServer("chat", [Reply(text="Running three.", tool_calls=calls)]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    result = done(events)
    assert result.message.text == "Running three."
    assert [c.id for c in result.message.tool_calls] == [e.id for e in started]
    assert len(set(e.id for e in started)) == 3
    assert [json.loads(c.arguments)["command"] for c in result.message.tool_calls] == ["echo 0", "echo 1", "echo 2"]


async def test_servers_repeating_id_and_name_or_sending_whole_args(client_for) -> None:
    calls = [ToolCallSpec("shell", {"command": "ls"}), ToolCallSpec("read_file", {"path": "a.py"})]
    with FakeModelServer("chat", [Reply(tool_calls=calls, repeat_ids=True), Reply(tool_calls=calls, args_chunk=None)]) \
            as server:
        client = client_for(server)
        for _ in range(2):
            result = done(await collect(client.stream(REQUEST)))
            assert [(c.name, json.loads(c.arguments)) for c in result.message.tool_calls] == [
                ("shell", {"command": "ls"}), ("read_file", {"path": "a.py"})]


async def test_finish_reason_stop_with_tool_calls_means_tool_use(client_for) -> None:
    # Ollama and some others say "stop" after a tool call.
    with FakeModelServer("chat", [Reply(tool_calls=[ToolCallSpec("shell", {})], stop="end_turn")]) as server:
        result = done(await collect(client_for(server).stream(REQUEST)))
    assert result.stop_reason == "tool_use" and result.message.tool_calls[0].arguments == "{}"


async def test_finish_reasons_map(client_for) -> None:
    with FakeModelServer("chat", [Reply(text="cut", stop="max_tokens"), Reply(text="x", stop="content_filter")]) as s:
        client = client_for(s)
        assert done(await collect(client.stream(REQUEST))).stop_reason == "max_tokens"
        assert done(await collect(client.stream(REQUEST))).stop_reason == "content_filter"


async def test_reasoning_content_becomes_reasoning_deltas(client_for) -> None:
    with FakeModelServer("chat", [Reply(text="42", reasoning="let me think about it")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "let me think about it"
    assert done(events).message.text == "42"


def _chunk(delta: dict, finish: str | None = None) -> tuple[None, str]:
    return None, json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


async def test_quirky_stream_without_done_args_as_object_and_shared_index(client_for) -> None:
    events = [
        _chunk({"role": "assistant"}),
        # two different calls, both at index 0, arguments as an object (seen from some local servers)
        _chunk({"tool_calls": [{"index": 0, "id": "c1",
                                "function": {"name": "shell", "arguments": {"command": "ls"}}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "c2", "function": {"name": "shell", "arguments": '{"command": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"pwd"}'}}]}),
        _chunk({}, "tool_calls"),
        # no usage chunk, no [DONE]: the finish reason is enough
    ]
    with FakeModelServer("chat", [RawStream(events)]) as server:
        result = done(await collect(client_for(server).stream(REQUEST)))
    assert [(c.id, json.loads(c.arguments)) for c in result.message.tool_calls] == [
        ("c1", {"command": "ls"}), ("c2", {"command": "pwd"})]


async def test_missing_tool_call_id_is_generated(client_for) -> None:
    events = [_chunk({"tool_calls": [{"index": 0, "function": {"name": "shell", "arguments": "{}"}}]}),
              _chunk({}, "tool_calls"), (None, "[DONE]")]
    with FakeModelServer("chat", [RawStream(events)]) as server:
        result = done(await collect(client_for(server).stream(REQUEST)))
    assert result.message.tool_calls[0].id.startswith("call_")


async def test_request_shape_for_history(client_for) -> None:
    request = ModelRequest(system="SYS", items=HISTORY, tools=TOOLS, max_output_tokens=123)
    with FakeModelServer("chat", [Reply(text="ok")]) as server:
        await collect(client_for(server, api_key=None).stream(request))
    body = server.requests[0]
    assert body["model"] == "test-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 123
    assert body["tools"] == [{"type": "function", "function": {"name": "shell", "description": "Run a command",
                                                               "parameters": TOOLS[0].parameters}}]
    assert body["messages"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "shell", "arguments": '{"command": "ls"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "x"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "a.txt\nb.txt"},
        {"role": "tool", "tool_call_id": "call_b", "content": "no such file"},
        {"role": "assistant", "content": "Two files."},
        {"role": "user", "content": "SUMMARY: listed files"},
        {"role": "user", "content": "next task"},
    ]
    assert "authorization" not in server.log[0].headers  # local servers need no key


async def test_api_key_goes_in_bearer_header(client_for) -> None:
    with FakeModelServer("chat", [Reply(text="ok")]) as server:
        await collect(client_for(server, api_key="sk-test").stream(REQUEST))
    assert server.log[0].headers["authorization"] == "Bearer sk-test"
    assert server.log[0].path == "/v1/chat/completions"


async def test_round_trip_tool_result_reaches_the_model(client_for) -> None:
    def answer(body: dict) -> Reply:
        last = body["messages"][-1]
        assert last["role"] == "tool"
        return Reply(text=f"the tool said: {last['content']}")

    with FakeModelServer("chat", [Reply(tool_calls=[ToolCallSpec("shell", {"command": "date"})]), answer]) as server:
        client = client_for(server)
        first = done(await collect(client.stream(REQUEST)))
        call = first.message.tool_calls[0]
        items = [*REQUEST.items, first.message, ToolResult(call_id=call.id, name=call.name, output="Tuesday")]
        second = done(await collect(client.stream(ModelRequest(system="s", items=items, tools=TOOLS))))
    assert second.message.text == "the tool said: Tuesday"
    assert server.requests[1]["messages"][-2]["tool_calls"][0]["id"] == call.id


async def test_make_client_ollama_against_fake_server() -> None:
    with FakeModelServer("chat", [Reply(text="local hello")]) as server:
        config = resolve_config(provider="ollama", model="qwen2.5-coder", base_url=server.base_url, env={})
        assert config.api_key is None
        client = make_client(config)
        try:
            assert client.provider == "ollama"
            result = done(await collect(client.stream(REQUEST)))
        finally:
            await client.aclose()
    assert result.message.text == "local hello"
    assert server.requests[0]["model"] == "qwen2.5-coder"


async def test_make_client_uses_config_retry_policy() -> None:
    config = resolve_config(provider="openai-chat", model="m", base_url="http://127.0.0.1:9/v1", env={},
                            settings={"max_retries": 0, "idle_timeout": 7})
    client = make_client(config)
    assert client.policy == RetryPolicy(max_retries=0, idle_timeout=7.0)
    await client.aclose()


async def test_in_stream_error_with_client_status_is_not_retried(client_for) -> None:
    error = {"error": {"object": "error", "message": "tool_choice auto needs --enable-auto-tool-choice",
                       "type": "BadRequestError", "code": 400}}
    with FakeModelServer("chat", [RawStream([(None, json.dumps(error))]), Reply(text="never")]) as server:
        with pytest.raises(ModelError) as info:
            await collect(client_for(server).stream(REQUEST))
    assert info.value.kind == "bad_request" and "enable-auto-tool-choice" in info.value.message
    assert len(server.requests) == 1

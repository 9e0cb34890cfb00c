"""Retry behaviour of all three HTTP clients, through real HTTP against the fake servers."""

from __future__ import annotations

import email.utils

import pytest
from fake_servers import (
    ContextOverflow,
    CutStream,
    FakeModelServer,
    Fault,
    IdleStream,
    Malformed,
    Reply,
    StreamError,
    ToolCallSpec,
    collect,
)

from agent.items import UserMessage
from agent.models.base import Completed, ContextOverflowError, ModelError, ModelRequest, Retrying, TextDelta
from agent.models.retry import RetryPolicy, classify_http_error, parse_retry_after

PROVIDERS = ["chat", "responses", "anthropic"]
REQUEST = ModelRequest(system="be brief", items=[UserMessage(text="hi")])


def final(events: list) -> Completed:
    assert isinstance(events[-1], Completed), events
    return events[-1]


def retries(events: list) -> list[Retrying]:
    return [e for e in events if isinstance(e, Retrying)]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_429_retry_after_is_honoured(provider: str, client_for) -> None:
    with FakeModelServer(provider, [Fault(429, headers={"Retry-After": "1"}), Reply(text="ok")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert final(events).message.text == "ok"
    [retry] = retries(events)
    assert retry.delay == 1.0 and retry.attempt == 1 and "429" in retry.reason
    gap = server.log[1].at - server.log[0].at
    assert 0.9 <= gap < 3.0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_retry_after_ms_wins_over_backoff(provider: str, client_for) -> None:
    script = [Fault(429, headers={"retry-after-ms": "300", "Retry-After": "9"}), Reply(text="ok")]
    with FakeModelServer(provider, script) as server:
        events = await collect(client_for(server, base_delay=5.0).stream(REQUEST))
    assert final(events).message.text == "ok"
    assert retries(events)[0].delay == pytest.approx(0.3)
    assert 0.25 <= server.log[1].at - server.log[0].at < 2.0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_500_then_success(provider: str, client_for) -> None:
    with FakeModelServer(provider, [Fault(500), Fault(503), Reply(text="recovered")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert final(events).message.text == "recovered"
    assert [r.attempt for r in retries(events)] == [1, 2]
    assert len(server.requests) == 3


async def test_529_overloaded_then_success(client_for) -> None:
    with FakeModelServer("anthropic", [Fault(529), Reply(text="fine")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert final(events).message.text == "fine"
    assert "529" in retries(events)[0].reason


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_in_stream_error_event_is_retried(provider: str, client_for) -> None:
    with FakeModelServer(provider, [StreamError(after_events=2), Reply(text="second try")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert final(events).message.text == "second try"
    assert len(retries(events)) == 1 and len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_connection_reset_mid_stream_then_success(provider: str, client_for) -> None:
    cut = CutStream(after_events=8, reply=Reply(text="partial answer that never ends"))
    with FakeModelServer(provider, [cut, Reply(text="whole answer")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    [retry] = retries(events)
    before = [e.text for e in events[:events.index(retry)] if isinstance(e, TextDelta)]
    assert before, "some text streamed before the reset"
    assert final(events).message.text == "whole answer"  # the discarded attempt's text is not in the message
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_idle_stream_times_out_and_retries(provider: str, client_for) -> None:
    with FakeModelServer(provider, [IdleStream(after_events=2, seconds=10), Reply(text="awake")]) as server:
        events = await collect(client_for(server, idle_timeout=0.3).stream(REQUEST))
    assert final(events).message.text == "awake"
    assert "idle" in retries(events)[0].reason
    assert server.log[1].at - server.log[0].at < 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_slow_but_alive_stream_is_not_cut(provider: str, client_for) -> None:
    with FakeModelServer(provider, [IdleStream(after_events=2, seconds=0.2, reply=Reply(text="slow one"))]) as server:
        events = await collect(client_for(server, idle_timeout=2.0).stream(REQUEST))
    assert final(events).message.text == "slow one"
    assert not retries(events)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", ["bad_json", "no_terminal"])
async def test_malformed_stream_is_retried(provider: str, kind: str, client_for) -> None:
    with FakeModelServer(provider, [Malformed(kind=kind), Reply(text="clean")]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert final(events).message.text == "clean"
    assert len(retries(events)) == 1 and len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_until_give_up_is_a_stream_error(provider: str, client_for) -> None:
    with FakeModelServer(provider, [Malformed(), Malformed("no_terminal"), Malformed()]) as server:
        client = client_for(server, max_retries=2)
        with pytest.raises(ModelError) as info:
            await collect(client.stream(REQUEST))
    assert info.value.kind == "stream"
    assert "gave up after 3 attempts" in info.value.message
    assert len(server.requests) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("status", "kind"), [(400, "bad_request"), (401, "auth"), (403, "auth"), (404, "not_found")])
async def test_client_errors_are_not_retried(provider: str, status: int, kind: str, client_for) -> None:
    with FakeModelServer(provider, [Fault(status, message="nope"), Reply(text="never")]) as server:
        with pytest.raises(ModelError) as info:
            await collect(client_for(server).stream(REQUEST))
    assert info.value.kind == kind and info.value.status == status
    assert "nope" in info.value.message
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_context_overflow_is_not_retried(provider: str, client_for) -> None:
    with FakeModelServer(provider, [ContextOverflow(), Reply(text="never")]) as server:
        with pytest.raises(ContextOverflowError) as info:
            await collect(client_for(server).stream(REQUEST))
    assert info.value.kind == "context_overflow" and info.value.status == 400
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_413_is_context_overflow(provider: str, client_for) -> None:
    with FakeModelServer(provider, [Fault(413, message="request too large")]) as server:
        with pytest.raises(ContextOverflowError):
            await collect(client_for(server).stream(REQUEST))
    assert len(server.requests) == 1


async def test_local_server_overflow_message_is_recognised(client_for) -> None:
    body = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                      "type": "exceed_context_size_error"}}
    with FakeModelServer("chat", [Fault(400, body=body)]) as server:
        with pytest.raises(ContextOverflowError):
            await collect(client_for(server).stream(REQUEST))


async def test_responses_failed_with_context_length_is_overflow(client_for) -> None:
    step = StreamError(error_type="context_length_exceeded", message="Your input exceeds the context window")
    with FakeModelServer("responses", [step, Reply(text="never")]) as server:
        with pytest.raises(ContextOverflowError):
            await collect(client_for(server).stream(REQUEST))
    assert len(server.requests) == 1


async def test_anthropic_invalid_request_event_is_not_retried(client_for) -> None:
    step = StreamError(error_type="invalid_request_error", message="messages: bad role")
    with FakeModelServer("anthropic", [step, Reply(text="never")]) as server:
        with pytest.raises(ModelError) as info:
            await collect(client_for(server).stream(REQUEST))
    assert info.value.kind == "bad_request"
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_retries_exhausted_reports_the_last_error(provider: str, client_for) -> None:
    with FakeModelServer(provider, [Fault(503), Fault(503), Fault(503)]) as server:
        with pytest.raises(ModelError) as info:
            await collect(client_for(server, max_retries=2).stream(REQUEST))
    assert info.value.kind == "server" and info.value.status == 503
    assert len(server.requests) == 3


async def test_insufficient_quota_is_not_retried(client_for) -> None:
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                      "code": "insufficient_quota"}}
    with FakeModelServer("chat", [Fault(429, body=body), Reply(text="never")]) as server:
        with pytest.raises(ModelError) as info:
            await collect(client_for(server).stream(REQUEST))
    assert info.value.kind == "rate_limit" and "quota" in info.value.message
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_script_exhausted_fails_fast(provider: str, client_for) -> None:
    with FakeModelServer(provider, []) as server:
        with pytest.raises(ModelError) as info:
            await collect(client_for(server).stream(REQUEST))
    assert "script exhausted" in info.value.message
    assert len(server.requests) == 1  # x-should-retry: false


async def test_connection_refused_is_a_network_error(client_for) -> None:
    with FakeModelServer("chat") as server:
        pass  # closed: nothing listens on its port any more
    with pytest.raises(ModelError) as info:
        await collect(client_for(server, max_retries=1).stream(REQUEST))
    assert info.value.kind == "network"
    assert f"127.0.0.1:{server.port}" in info.value.message


async def test_tool_calls_survive_a_retry(client_for) -> None:
    reply = Reply(tool_calls=[ToolCallSpec("shell", {"command": "ls -la"})])
    with FakeModelServer("anthropic", [CutStream(after_events=5, reply=reply), reply]) as server:
        events = await collect(client_for(server).stream(REQUEST))
    assert len(final(events).message.tool_calls) == 1


# -- pure helpers ---------------------------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0


def test_backoff_grows_with_jitter_and_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, multiplier=2, max_delay=32, jitter=0.25)
    for retry, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0)]:
        for _ in range(50):
            assert nominal * 0.75 <= policy.backoff(retry) <= nominal * 1.25
    assert all(policy.backoff(20) <= 32 for _ in range(50))
    assert policy.backoff(1, retry_after=3.0) == 3.0
    assert RetryPolicy(max_retry_after=10).backoff(1, retry_after=3600) == 10


def test_classification_table() -> None:
    from agent.models.retry import RetryableError

    assert isinstance(classify_http_error(429, "slow down", {}), RetryableError)
    assert isinstance(classify_http_error(529, "overloaded", {}), RetryableError)
    assert isinstance(classify_http_error(502, "bad gateway", {}), RetryableError)
    assert isinstance(classify_http_error(408, "timeout", {}), RetryableError)
    assert isinstance(classify_http_error(500, "x", {"x-should-retry": "false"}), ModelError)
    assert isinstance(classify_http_error(400, "prompt is too long: 1 > 0", {}), ContextOverflowError)
    assert isinstance(classify_http_error(400, "x", {}, code="context_length_exceeded"), ContextOverflowError)
    err = classify_http_error(422, "unprocessable", {})
    assert isinstance(err, ModelError) and err.kind == "bad_request"


async def test_connection_refused_gives_up_after_a_few_quick_retries() -> None:
    import socket

    import trio

    from agent.models.chat import ChatCompletionsClient

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(base_delay=0.01, max_delay=0.02, max_retries=8, max_refused_retries=2)
    client = ChatCompletionsClient(model="m", base_url=f"http://127.0.0.1:{port}/v1", policy=policy)
    retries = []
    with trio.fail_after(10), pytest.raises(ModelError) as info:
        async for event in client.stream(ModelRequest(system="s", items=[UserMessage(text="hi")])):
            if isinstance(event, Retrying):
                retries.append(event)
    await client.aclose()
    assert [r.max_attempts for r in retries] == [2, 2]
    assert "connection refused" in str(info.value)

"""The fake servers themselves: other tests rely on their script semantics."""

from __future__ import annotations

import httpx
import pytest
import trio
from fake_servers import FakeModelServer, Reply, collect

from agent.items import UserMessage
from agent.models.base import Completed, ModelRequest

REQUEST = ModelRequest(system="", items=[UserMessage(text="ping")])


@pytest.mark.parametrize("provider", ["chat", "responses", "anthropic"])
async def test_callable_step_sees_the_request_and_add_extends_the_script(provider: str, client_for) -> None:
    seen: list[dict] = []

    def step(body: dict) -> Reply:
        seen.append(body)
        return Reply(text=f"model was {body['model']}")

    with FakeModelServer(provider, [step]) as server:
        client = client_for(server, model="m-42")
        events = await collect(client.stream(REQUEST))
        server.add(Reply(text="added later"))
        later = await collect(client.stream(REQUEST))
        assert await server.await_requests(2) == server.requests
    assert isinstance(events[-1], Completed) and events[-1].message.text == "model was m-42"
    assert later[-1].message.text == "added later"
    assert seen == [server.requests[0]]


async def test_wrong_path_is_a_404_and_recorded() -> None:
    with FakeModelServer("anthropic", [Reply(text="x")]) as server:
        async with httpx.AsyncClient() as http:
            resp = await http.post(server.root_url + "/v1/chat/completions", json={})
        assert resp.status_code == 404
        assert server.errors and "unexpected path" in server.errors[0]
        assert server.requests == []  # the script was not consumed


async def test_wait_for_requests_from_a_thread() -> None:
    with FakeModelServer("chat", [Reply(text="x")]) as server:
        with pytest.raises(TimeoutError):
            await trio.to_thread.run_sync(lambda: server.wait_for_requests(1, timeout=0.05))
        async with httpx.AsyncClient() as http:
            await http.post(server.base_url + "/chat/completions", json={"n": 1})
        assert await trio.to_thread.run_sync(server.wait_for_requests, 1) == [{"n": 1}]


@pytest.mark.parametrize("provider", ["chat", "responses", "anthropic"])
async def test_client_reuses_its_connection_between_requests(provider: str, client_for) -> None:
    with FakeModelServer(provider, [Reply(text="one"), Reply(text="two")]) as server:
        client = client_for(server)
        await collect(client.stream(REQUEST))
        await collect(client.stream(REQUEST))
    assert server.log[0].client_port == server.log[1].client_port

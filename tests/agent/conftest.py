"""Fixtures: a client factory bound to a fake server (fast retries); a scratch workspace for CLI runs."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.models.anthropic import AnthropicClient
from agent.models.chat import ChatCompletionsClient
from agent.models.http import HTTPModelClient
from agent.models.responses import ResponsesClient
from agent.models.retry import RetryPolicy

CLIENT_CLASSES: dict[str, type[HTTPModelClient]] = {
    "chat": ChatCompletionsClient, "responses": ResponsesClient, "anthropic": AnthropicClient}

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05, idle_timeout=5.0, connect_timeout=2.0)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., HTTPModelClient]]:
    """`client_for(server, **policy_overrides)`: the matching client, fast retries, closed after the test."""
    made: list[HTTPModelClient] = []

    def make(server: Any, *, api_key: str | None = "test-key", model: str = "test-model", **policy: Any) -> \
            HTTPModelClient:
        fields = {**FAST.__dict__, **policy}
        client = CLIENT_CLASSES[server.provider](model=model, base_url=server.base_url, api_key=api_key,
                                                 policy=RetryPolicy(**fields))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


AGENT_TEST_BASE = Path("/srv/stockade-agent-test")  # not /tmp: the sandbox's /tmp is private


@pytest.fixture
def ws() -> Iterator[Path]:
    """An empty workspace directory, removed after the test."""
    AGENT_TEST_BASE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ws-", dir=AGENT_TEST_BASE))
    (root / "ws").mkdir()
    try:
        yield root / "ws"
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):
            AGENT_TEST_BASE.rmdir()  # only when no other run is using it


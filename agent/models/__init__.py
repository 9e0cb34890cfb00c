"""Model clients: OpenAI Chat Completions (and local OpenAI-compatible servers), OpenAI Responses,
Anthropic Messages, and a scripted model.

Import-light on purpose: httpx, trio and the clients load only when a client is made.

    config = resolve_config(provider=flags.provider, model=flags.model, settings=file_settings)
    client = make_client(config)
    async for event in client.stream(ModelRequest(system=..., items=history, tools=specs)):
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from agent.models.base import ModelClient
    from agent.models.config import ModelConfig

__all__ = ["make_client", "resolve_config"]


def make_client(config: ModelConfig, *, http: httpx.AsyncClient | None = None) -> ModelClient:
    """The client for a resolved config (see `agent.models.config.resolve_config`)."""
    common: dict[str, Any] = {"model": config.model, "base_url": config.base_url, "api_key": config.api_key,
                              "policy": config.retry, "http": http, **dict(config.options)}
    if config.provider == "anthropic":
        from agent.models.anthropic import AnthropicClient

        return AnthropicClient(**common)
    if config.provider == "openai":
        from agent.models.responses import ResponsesClient

        return ResponsesClient(**common)
    if config.provider in ("openai-chat", "ollama"):
        from agent.models.chat import ChatCompletionsClient

        client = ChatCompletionsClient(**common)
        client.provider = config.provider
        return client
    from agent.models.base import ModelError

    raise ModelError("config", f"unknown provider {config.provider!r}")


def __getattr__(name: str) -> Any:
    if name == "resolve_config":
        from agent.models.config import resolve_config

        return resolve_config
    raise AttributeError(name)

"""Model configuration: precedence, provider inference, and error messages that say what to set."""

from __future__ import annotations

import pytest

from agent.models import make_client
from agent.models.base import ModelError
from agent.models.config import NOTHING_CONFIGURED, resolve_config
from agent.models.scripted import ScriptedModel, ScriptedReply, tool_call


def error_of(**kwargs: object) -> ModelError:
    with pytest.raises(ModelError) as info:
        resolve_config(**kwargs)  # type: ignore[arg-type]
    assert info.value.kind == "config"
    return info.value


def test_nothing_configured_says_what_to_set() -> None:
    err = error_of(env={})
    assert err.message == NOTHING_CONFIGURED
    for hint in ("ANTHROPIC_API_KEY", "STOCKADE_MODEL", "OPENAI_API_KEY", "--provider ollama", "--model"):
        assert hint in err.message


def test_anthropic_key_alone_is_enough() -> None:
    config = resolve_config(env={"ANTHROPIC_API_KEY": "ak-secret"})
    assert (config.provider, config.base_url, config.api_key) == ("anthropic", "https://api.anthropic.com", "ak-secret")
    assert config.model.startswith("claude")
    assert config.key_source == "ANTHROPIC_API_KEY"
    assert "ak-secret" not in repr(config) and "ak-secret" not in config.describe()


def test_openai_key_means_responses_api() -> None:
    config = resolve_config(env={"OPENAI_API_KEY": "sk-1", "STOCKADE_MODEL": "gpt-4.1"})
    assert (config.provider, config.model, config.base_url) == ("openai", "gpt-4.1", "https://api.openai.com/v1")


def test_openai_base_url_elsewhere_means_chat_completions() -> None:
    config = resolve_config(env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "http://gpu:8000/v1/",
                                 "STOCKADE_MODEL": "Qwen/Qwen2.5-Coder"})
    assert (config.provider, config.base_url) == ("openai-chat", "http://gpu:8000/v1")


def test_model_name_picks_provider_when_both_keys_are_set() -> None:
    env = {"OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak"}
    assert resolve_config(model="gpt-5-mini", env=env).provider == "openai"
    assert resolve_config(model="claude-haiku-4-5", env=env).provider == "anthropic"
    assert resolve_config(env=env).provider == "anthropic"


def test_precedence_flags_then_settings_then_env() -> None:
    env = {"STOCKADE_PROVIDER": "anthropic", "STOCKADE_MODEL": "env-model", "ANTHROPIC_API_KEY": "env-key"}
    settings = {"model": "file-model", "api_key": "file-key"}
    config = resolve_config(settings=settings, env=env)
    assert (config.model, config.api_key, config.key_source) == ("file-model", "file-key", "config file")
    config = resolve_config(model="flag-model", api_key="flag-key", settings=settings, env=env)
    assert (config.model, config.api_key, config.key_source) == ("flag-model", "flag-key", "--api-key")
    config = resolve_config(provider="openai-chat", base_url="http://localhost:8080/v1", settings=settings, env=env)
    assert (config.provider, config.base_url) == ("openai-chat", "http://localhost:8080/v1")


def test_settings_api_key_env_and_hyphenated_keys() -> None:
    config = resolve_config(settings={"provider": "openai", "model": "gpt-5", "api-key-env": "MY_KEY"},
                            env={"MY_KEY": "sk-mine"})
    assert (config.api_key, config.key_source) == ("sk-mine", "MY_KEY")
    err = error_of(settings={"provider": "openai", "api_key_env": "MY_KEY"}, env={})
    assert "MY_KEY is not set" in err.message


def test_missing_key_names_the_variable() -> None:
    assert "set ANTHROPIC_API_KEY" in error_of(provider="anthropic", env={}).message
    assert "set OPENAI_API_KEY" in error_of(provider="openai", env={}).message
    assert "set OPENAI_API_KEY" in error_of(provider="openai-chat", model="gpt-4o", env={}).message


def test_ollama_needs_no_key_but_a_model() -> None:
    err = error_of(provider="ollama", env={"OPENAI_API_KEY": "sk"})
    assert "--model" in err.message and "STOCKADE_MODEL" in err.message
    config = resolve_config(provider="ollama", model="qwen2.5-coder", env={"OPENAI_API_KEY": "sk"})
    assert (config.base_url, config.api_key) == ("http://localhost:11434/v1", None)
    config = resolve_config(provider="ollama", model="m", env={"OLLAMA_HOST": "10.0.0.5:11434"})
    assert config.base_url == "http://10.0.0.5:11434/v1"


def test_local_base_url_alone_infers_chat_without_key() -> None:
    config = resolve_config(base_url="http://127.0.0.1:8080/v1", model="llama", env={})
    assert (config.provider, config.api_key) == ("openai-chat", None)
    assert resolve_config(env={"STOCKADE_BASE_URL": "http://localhost:11434/v1", "STOCKADE_MODEL": "m"}).provider \
        == "ollama"


def test_unknown_provider_lists_the_choices() -> None:
    err = error_of(provider="gemini", env={})
    assert "openai, openai-chat, anthropic, ollama" in err.message


def test_aliases() -> None:
    assert resolve_config(provider="chat", model="m", base_url="http://h:1/v1", env={}).provider == "openai-chat"
    assert resolve_config(provider="claude", env={"ANTHROPIC_API_KEY": "k"}).provider == "anthropic"


async def test_make_client_picks_the_class_and_hides_the_key() -> None:
    from agent.models.anthropic import AnthropicClient
    from agent.models.chat import ChatCompletionsClient
    from agent.models.responses import ResponsesClient

    cases = [({"provider": "anthropic", "api_key": "ak-secret"}, AnthropicClient),
             ({"provider": "openai", "api_key": "ak-secret"}, ResponsesClient),
             ({"provider": "openai-chat", "base_url": "http://h:1/v1", "model": "m"}, ChatCompletionsClient)]
    for kwargs, cls in cases:
        client = make_client(resolve_config(env={}, **kwargs))  # type: ignore[arg-type]
        assert type(client) is cls
        assert "ak-secret" not in repr(client)
        await client.aclose()


def test_models_package_is_import_light() -> None:
    import subprocess
    import sys

    code = "import sys, agent.models; print(sorted(m for m in ('httpx', 'trio', 'httpx_sse') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_scripted_model_plays_its_script() -> None:
    model = ScriptedModel(["hello world", ScriptedReply(tool_calls=[tool_call("shell", '{"command": "ls"}', "c1")])],
                          chunk_size=4)
    from agent.items import UserMessage
    from agent.models.base import Completed, ModelRequest, TextDelta, ToolCallStarted

    request = ModelRequest(system="s", items=[UserMessage(text="go")])
    first = [e async for e in model.stream(request)]
    assert "".join(e.text for e in first if isinstance(e, TextDelta)) == "hello world"
    assert isinstance(first[-1], Completed) and first[-1].stop_reason == "end_turn"
    second = [e async for e in model.stream(request)]
    assert ToolCallStarted("c1", "shell") in second and second[-1].stop_reason == "tool_use"
    with pytest.raises(ModelError, match="exhausted"):
        [e async for e in model.stream(request)]
    assert len(model.requests) == 3

"""Which model to talk to: provider, model, base URL and API key.

Precedence, per field: explicit values (CLI flags), then the settings dict
(the config file), then the environment. When something is missing the
error says exactly which variable or flag to set. Keys are never printed.

Settings keys (flat): provider, model, base_url, api_key, api_key_env (name of
an env var holding the key), max_retries, idle_timeout, options (dict of
provider-specific client options: thinking, reasoning, extra_body, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from agent.models.base import ModelError
from agent.models.retry import RetryPolicy

PROVIDERS = ("openai", "openai-chat", "anthropic", "ollama")
ALIASES = {"responses": "openai", "openai-responses": "openai", "chat": "openai-chat",
           "openai-compatible": "openai-chat", "local": "openai-chat", "claude": "anthropic", "vllm": "openai-chat",
           "llama.cpp": "openai-chat", "llamacpp": "openai-chat", "lmstudio": "openai-chat"}
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "openai-chat": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://localhost:11434/v1",
}
DEFAULT_MODELS = {"openai": "gpt-5", "anthropic": "claude-sonnet-4-5"}
KEY_ENV = {"openai": "OPENAI_API_KEY", "openai-chat": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "openai-chat": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}

NOTHING_CONFIGURED = (
    "no model configured: set ANTHROPIC_API_KEY (and optionally STOCKADE_MODEL), or OPENAI_API_KEY, "
    "or pass --provider ollama --model qwen2.5-coder for a local Ollama server, "
    "or --provider openai-chat --base-url http://HOST:PORT/v1 --model NAME for any OpenAI-compatible server "
    "(llama.cpp, vLLM, LM Studio); STOCKADE_PROVIDER / STOCKADE_MODEL / STOCKADE_BASE_URL work too"
)


@dataclass(frozen=True)
class ModelConfig:
    provider: str  # one of PROVIDERS
    model: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    key_source: str | None = None  # e.g. "ANTHROPIC_API_KEY", "--api-key", "config file"; never the key
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for logs and `--help`-style output, without the key."""
        key = f", key from {self.key_source}" if self.key_source else ", no API key"
        return f"{self.provider} model {self.model} at {self.base_url}{key}"


def _get(settings: Mapping[str, Any], name: str) -> Any:
    value = settings.get(name)
    if value is None:
        value = settings.get(name.replace("_", "-"))
    return value if value not in ("", None) else None


def _is_host(url: str, host: str) -> bool:
    return (urlparse(url).hostname or "").endswith(host)


def _infer_provider(base_url: str | None, model: str | None, env: Mapping[str, str]) -> str | None:
    if base_url:
        if _is_host(base_url, "anthropic.com"):
            return "anthropic"
        if _is_host(base_url, "api.openai.com"):
            return "openai"
        if urlparse(base_url).port == 11434:
            return "ollama"
        return "openai-chat"
    openai_base = env.get("OPENAI_BASE_URL")
    openai_kind = "openai-chat" if openai_base and not _is_host(openai_base, "api.openai.com") else "openai"
    if model:
        lowered = model.lower()
        if lowered.startswith("claude"):
            return "anthropic"
        if lowered.startswith(("gpt", "o1", "o3", "o4", "codex")):
            return openai_kind
    if env.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    if env.get("OPENAI_API_KEY") or openai_base:
        return openai_kind
    return None


def resolve_config(*, provider: str | None = None, model: str | None = None, base_url: str | None = None,
                   api_key: str | None = None, settings: Mapping[str, Any] | None = None,
                   env: Mapping[str, str] | None = None) -> ModelConfig:
    """Resolve the model configuration, or raise ModelError("config", <what to set>)."""
    settings = settings or {}
    env = os.environ if env is None else env

    provider = provider or _get(settings, "provider") or env.get("STOCKADE_PROVIDER") or None
    model = model or _get(settings, "model") or env.get("STOCKADE_MODEL") or None
    explicit_base = base_url or _get(settings, "base_url") or env.get("STOCKADE_BASE_URL") or None

    if provider:
        provider = ALIASES.get(provider.lower(), provider.lower())
        if provider not in PROVIDERS:
            raise ModelError("config", f"unknown provider {provider!r}: use one of {', '.join(PROVIDERS)} "
                                       "(--provider or STOCKADE_PROVIDER)")
    else:
        provider = _infer_provider(explicit_base, model, env)
        if provider is None:
            raise ModelError("config", NOTHING_CONFIGURED)

    url = explicit_base or (env.get(BASE_URL_ENV[provider]) if provider in BASE_URL_ENV else None)
    if provider == "ollama" and not url and env.get("OLLAMA_HOST"):
        host = env["OLLAMA_HOST"]
        host = host if "://" in host else f"http://{host}"
        url = host.rstrip("/") + "/v1"
    url = (url or DEFAULT_BASE_URLS[provider]).rstrip("/")

    model = model or DEFAULT_MODELS.get(provider)
    if not model:
        example = "qwen2.5-coder" if provider == "ollama" else "the name the server serves"
        raise ModelError("config", f"provider {provider!r} needs a model name: pass --model (e.g. {example}) "
                                   "or set STOCKADE_MODEL")

    key, source = _resolve_key(provider, api_key, settings, env)
    official = {"openai": "api.openai.com", "openai-chat": "api.openai.com", "anthropic": "anthropic.com"}
    if not key and provider in official and _is_host(url, official[provider]):
        var = KEY_ENV[provider]
        raise ModelError("config", f"provider {provider!r} needs an API key: set {var} "
                                   "(or pass --api-key, or set api_key in the config file)")

    retry = RetryPolicy()
    overrides = {name: float(_get(settings, name)) for name in ("idle_timeout", "base_delay", "max_delay")
                 if _get(settings, name) is not None}
    if _get(settings, "max_retries") is not None:
        overrides["max_retries"] = int(_get(settings, "max_retries"))
    if overrides:
        retry = RetryPolicy(**overrides)  # type: ignore[arg-type]
    return ModelConfig(provider=provider, model=model, base_url=url, api_key=key, key_source=source, retry=retry,
                       options=dict(_get(settings, "options") or {}))


def _resolve_key(provider: str, explicit: str | None, settings: Mapping[str, Any],
                 env: Mapping[str, str]) -> tuple[str | None, str | None]:
    if explicit:
        return explicit, "--api-key"
    if _get(settings, "api_key"):
        return str(_get(settings, "api_key")), "config file"
    var = _get(settings, "api_key_env")
    if var:
        if not env.get(var):
            raise ModelError("config", f"the config file names {var} as the API key variable, but {var} is not set")
        return env[var], str(var)
    if provider in KEY_ENV and env.get(KEY_ENV[provider]):
        return env[KEY_ENV[provider]], KEY_ENV[provider]
    return None, None

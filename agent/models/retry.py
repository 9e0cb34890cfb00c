"""Retry policy shared by the HTTP model clients.

Which failures are worth retrying (429, 5xx, 529, dropped or stalled streams)
and which are not (auth, bad request, context overflow) is decided here once,
so all providers behave alike. Backoff is exponential with jitter, and a
server's `Retry-After` / `retry-after-ms` wins over our own schedule.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass

import trio

from agent.models.base import Completed, ContextOverflowError, ErrorKind, ModelError, Retrying, StreamEvent


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Tests pass tiny delays; defaults follow Claude Code's (0.5 s, doubling, cap 32 s, ±25 %)."""

    max_retries: int = 8  # retries after the first attempt
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 32.0
    jitter: float = 0.25  # ± fraction
    max_retry_after: float = 120.0  # a server asking for longer than this is clamped
    idle_timeout: float = 300.0  # no bytes for this long: the stream is dead
    connect_timeout: float = 30.0
    # Nothing listening (connection refused): a wrong URL or a local server not started. A few quick
    # retries cover a server that is restarting; 8 doubling ones would keep the user waiting ~90 s.
    max_refused_retries: int = 3

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Delay before retry number `retry` (1-based)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        delay = self.base_delay * self.multiplier ** (retry - 1)
        delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, min(delay, self.max_delay))


class RetryableError(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None, refused: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.refused = refused  # nothing listening: see RetryPolicy.max_refused_retries


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_OVERFLOW_MARKERS = (
    "context_length_exceeded", "prompt is too long", "maximum context length", "context window",
    "exceeds the context", "exceed context", "exceeds the available context", "context size",
    "input length and `max_tokens` exceed", "request_too_large",
)


def looks_like_overflow(message: str, code: str | None = None) -> bool:
    text = f"{code or ''} {message}".lower()
    return any(marker in text for marker in _OVERFLOW_MARKERS)


def classify_http_error(status: int, message: str, headers: Mapping[str, str], *,
                        code: str | None = None) -> Exception:
    """Turn an HTTP error into RetryableError (try again) or ModelError (give up now)."""
    should_retry = (headers.get("x-should-retry") or "").lower()
    retry_after = parse_retry_after(headers)
    if status == 413 or (status == 400 and looks_like_overflow(message, code)):
        return ContextOverflowError(message, status=status)
    if should_retry == "false":
        kind: ErrorKind = "server" if status >= 500 else "bad_request"
        return ModelError(kind, message, status=status)
    if status == 429 and code == "insufficient_quota":
        return ModelError("rate_limit", f"quota exhausted (check the account's billing): {message}", status=status)
    if status in (408, 409, 429) or status >= 500 or should_retry == "true":
        kind = "rate_limit" if status == 429 else "overloaded" if status == 529 else "server"
        return RetryableError(kind, message, status=status, retry_after=retry_after)
    if status in (401, 403):
        return ModelError("auth", f"{message} (check the API key)", status=status)
    if status == 404:
        return ModelError("not_found", f"{message} (check the model name and base URL)", status=status)
    return ModelError("bad_request", message, status=status)


async def with_retries(policy: RetryPolicy, attempt: Callable[[], AsyncIterator[StreamEvent]]) -> \
        AsyncIterator[StreamEvent]:
    """Run `attempt` until it yields Completed, retrying RetryableError with backoff.

    An attempt that ends without Completed counts as a cut stream. Before each
    retry a `Retrying` event tells the consumer to drop that attempt's output.
    """
    retry = 0
    while True:
        try:
            async with aclosing(attempt()) as events:
                async for event in events:
                    yield event
                    if isinstance(event, Completed):
                        return
            raise RetryableError("stream", "the stream ended before the response was complete")
        except RetryableError as err:
            limit = min(policy.max_retries, policy.max_refused_retries) if err.refused else policy.max_retries
            if retry >= limit:
                tries = "1 attempt" if retry == 0 else f"{retry + 1} attempts"
                raise ModelError(err.kind, f"{err.message} (gave up after {tries})", status=err.status) from err
            retry += 1
            delay = policy.backoff(retry, err.retry_after)
            reason = f"HTTP {err.status}: {err.message}" if err.status else f"{err.kind}: {err.message}"
        yield Retrying(attempt=retry, max_attempts=limit, delay=delay, reason=reason)
        await trio.sleep(delay)

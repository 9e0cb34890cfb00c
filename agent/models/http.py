"""What the three HTTP clients share: one POST, SSE parsing, error mapping, retries.

A provider client only says how to build the request body, how to read its
event stream, and where its error message lives in an error body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import trio
from httpx_sse import EventSource, ServerSentEvent

from agent.models.base import Completed, ModelError, ModelRequest, StreamEvent
from agent.models.retry import RetryableError, RetryPolicy, classify_http_error, with_retries

USER_AGENT = "stockade-agent/0.1"
DRAIN_SECONDS = 0.5


class HTTPModelClient:
    """Base for the streaming HTTP clients. Subclasses set `provider`, `path` and the hooks below."""

    provider: str = ""
    path: str = ""

    def __init__(self, *, model: str, base_url: str, api_key: str | None = None,
                 policy: RetryPolicy | None = None, headers: Mapping[str, str] | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.policy = policy or RetryPolicy()
        self._extra_headers = dict(headers or {})
        self._http = http
        self._owns_http = http is None

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    # hooks -------------------------------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        raise NotImplementedError

    def parse_stream(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError

    def error_details(self, body: Any) -> tuple[str | None, str | None]:
        """(message, code) from an error body; OpenAI's `{"error": {"message", "code"}}` by default."""
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return err.get("message"), err.get("code") or err.get("type")
        if isinstance(err, str):
            return err, None
        return None, None

    # machinery ---------------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            p = self.policy
            timeout = httpx.Timeout(connect=p.connect_timeout, read=p.idle_timeout, write=max(60.0, p.connect_timeout),
                                    pool=p.connect_timeout)
            self._http = httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT})
        return self._http

    async def aclose(self) -> None:
        if self._http is not None and self._owns_http:
            await self._http.aclose()
            self._http = None

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        body = self.build_body(request)
        return with_retries(self.policy, lambda: self._attempt(body))

    async def _attempt(self, body: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        headers = {"Accept": "text/event-stream", **self.auth_headers(), **self._extra_headers}
        try:
            async with self._client().stream("POST", self.url, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    raise self._http_error(resp.status_code, await resp.aread(), resp.headers)
                ctype = resp.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    raw = await resp.aread()
                    raise self._not_a_stream(ctype, raw)
                sse = self._sse(resp)
                async with aclosing(sse), aclosing(self.parse_stream(sse)) as events:
                    async for event in events:
                        if isinstance(event, Completed):
                            await self._drain(sse)
                        yield event
        except httpx.ConnectTimeout as e:
            raise RetryableError("network", f"timed out connecting to {self.url}") from e
        except httpx.TimeoutException as e:
            raise RetryableError("stream", f"no data from the server for {self.policy.idle_timeout:g}s "
                                           "(idle stream)") from e
        except httpx.ConnectError as e:
            refused = _all_refused(e)
            why = "connection refused (is the server running?)" if refused else str(e)
            raise RetryableError("network", f"cannot connect to {self.url}: {why}", refused=refused) from e
        except httpx.TransportError as e:
            raise RetryableError("network", f"connection to {self.url} failed: {type(e).__name__}: {e}") from e

    async def _drain(self, sse: AsyncIterator[ServerSentEvent]) -> None:
        """Read the little that follows the terminal event, so the connection goes back to the pool."""
        with trio.move_on_after(DRAIN_SECONDS):
            async for _ in sse:
                pass

    async def _sse(self, resp: httpx.Response) -> AsyncIterator[ServerSentEvent]:
        async for sse in EventSource(resp).aiter_sse():
            yield sse

    def _http_error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> Exception:
        message, code = None, None
        try:
            message, code = self.error_details(json.loads(raw))
        except ValueError:
            pass
        if not message:
            text = raw.decode("utf-8", "replace").strip()
            message = text[:500] or httpx.codes.get_reason_phrase(status) or "error"
        return classify_http_error(status, message, headers, code=code)

    def _not_a_stream(self, ctype: str, raw: bytes) -> Exception:
        try:
            message, code = self.error_details(json.loads(raw))
        except ValueError:
            message, code = None, None
        if message:  # some servers report errors with a 200 and a JSON body
            return classify_http_error(400, message, {}, code=code)
        return ModelError("bad_request", f"{self.url} answered with {ctype or 'no content type'}, not an event "
                          "stream; is the base URL right and does the server support streaming?")

    @staticmethod
    def load(data: str) -> Any:
        """Parse one SSE data line; broken JSON means a damaged stream, which is worth retrying."""
        try:
            return json.loads(data)
        except ValueError as e:
            raise RetryableError("stream", f"malformed JSON in the event stream: {data[:200]!r}") from e


def _all_refused(exc: BaseException) -> bool:
    """Whether every connection attempt behind `exc` was refused (nothing listening at that address)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return all(_all_refused(e) for e in exc.exceptions)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


"""Turn SDK failures into ProviderError, the same way for every provider.

The anthropic and openai SDKs share a shape (`APIStatusError` with `status_code`, `response`,
`body`; `APIConnectionError`; raw `httpx2` transport errors mid-stream), so one mapping serves
both; each provider only says which SDK classes are which.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .base import INVALID_INPUT_KEY, ProviderError

# Statuses a retry can fix. 408/409 are retried by the SDKs themselves too; 529 is Anthropic's
# "overloaded".
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _api_message(body: Any, fallback: str) -> str:
    """The provider's own error text, without the SDK's 'Error code: N - {...}' wrapping."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    if isinstance(body, str) and body:
        return _plain(body)
    return _plain(fallback)


def _plain(text: str, limit: int = 300) -> str:
    """A proxy's or gateway's HTML error page as its title (or words), cut to one line."""
    if re.search(r"<\s*(!doctype|html|head|body)\b", text, re.IGNORECASE):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        text = f"{' '.join(text.split())} (an HTML page, not an API answer)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# How providers say a request is larger than the model's context window: Anthropic 400
# "prompt is too long: N tokens > M maximum" (413 request_too_large for huge bodies);
# OpenAI `context_length_exceeded` ("This model's maximum context length is ..."); and the
# wordings of OpenAI-compatible servers (vLLM, llama.cpp, Ollama, gateways).
_OVERFLOW = re.compile(
    r"prompt is too long|context[_ ]length[_ ]exceeded|maximum context length|"
    r"context window|exceeds the context|too many tokens|input is too long|"
    r"reduce the length of the (messages|prompt)",
    re.IGNORECASE,
)


def is_overflow(status: int, body: Any, detail: str) -> bool:
    """Whether an error answer says the request did not fit the context window."""
    if status not in (400, 413, 422):
        return False
    if status == 413 or _error_type(body) == "request_too_large":
        return True
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("code") == "context_length_exceeded":
        return True
    return bool(_OVERFLOW.search(detail))


def _error_type(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return err["type"]
    return None


def from_status(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    key_hint: str,
    fallback: str = "",
) -> ProviderError:
    """Classify an HTTP error answer (or an SSE `error` event carried on a 200 stream)."""
    detail = _api_message(body, fallback or f"HTTP {status}")
    kind = _error_type(body)
    retry_after = parse_retry_after(headers)
    if status == 200 and kind:
        # An error event mid-stream: the status is the stream's, the type says what happened.
        status = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500}.get(kind, 500)
    if status == 401:
        return ProviderError(
            f"{provider} rejected the API key (401): check {key_hint}. {detail}",
            status=status,
        )
    if status == 429 or kind == "rate_limit_error":
        return ProviderError(
            f"{provider} rate limit (429): {detail}",
            code="RATE_LIMITED",
            status=429,
            retryable=True,
            retry_after=retry_after,
        )
    if status == 404:
        return ProviderError(
            f"{provider}: not found (404), is the model id right? {detail}", status=404
        )
    retryable = status in RETRYABLE_STATUSES or status >= 500
    return ProviderError(
        f"{provider} error ({status}): {detail}",
        status=status,
        retryable=retryable,
        retry_after=retry_after,
        overflow=is_overflow(status, body, detail),
    )


def public_url(url: str | None) -> str | None:
    """A URL fit to show anyone (events, the log): no user, password, query or fragment,
    where keys could hide."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return None
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def connection_error(provider: str, exc: BaseException) -> ProviderError:
    """The request never got an answer (refused, DNS, timeout); names the URL tried."""
    request = getattr(exc, "request", None)
    try:
        url = f" at {public_url(str(request.url))}" if request is not None else ""
    except RuntimeError:  # httpx raises when a request was never attached
        url = ""
    return ProviderError(
        f"{provider} unreachable{url}: {exc}", retryable=True, reason=_connection_reason(exc)
    )


def _connection_reason(exc: BaseException) -> str:
    """A few words on why a connection failed, from the exception and what it wraps (the
    SDK's error wraps httpx's, which wraps trio's OSError and its group of attempts)."""
    found: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(found) < 20:
        seen = todo.pop()
        found.append(seen)
        todo += [e for e in (seen.__cause__, seen.__context__) if e is not None]
        if isinstance(seen, BaseExceptionGroup):
            todo += seen.exceptions
    if any(isinstance(e, ConnectionRefusedError) for e in found):
        return "connection refused"
    text = " ".join(f"{type(e).__name__} {e}".lower() for e in found)
    for words, reason in _CONNECTION_REASONS:
        if any(w in text for w in words):
            return reason
    return "connection failed"


_CONNECTION_REASONS = (
    (("refused",), "connection refused"),
    (("timeout", "timed out"), "connection timed out"),
    (("name or service", "nodename", "getaddrinfo", "name resolution"), "host not found"),
    (("ssl", "certificate"), "TLS handshake failed"),
    (("reset",), "connection reset"),
)


def stream_cut(provider: str, exc: BaseException | None = None) -> ProviderError:
    """The answer started but did not finish: retryable, nothing complete was received."""
    why = f": {exc}" if exc else ""
    return ProviderError(
        f"{provider} stream ended before the reply was complete{why}",
        retryable=True,
        reason="stream cut",
    )


def from_sdk(
    provider: str,
    sdk: Any,
    exc: Exception,
    *,
    transport_error: type[BaseException] | tuple[type[BaseException], ...],
    key_hint: str,
    midstream: bool = False,
) -> ProviderError:
    """Classify an exception raised by the anthropic or openai SDK (same hierarchy)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, sdk.APIStatusError):
        return from_status(
            provider,
            exc.status_code,
            exc.response.headers,
            exc.body,
            key_hint=key_hint,
            fallback=exc.message,
        )
    if _is_timeout(sdk, exc):
        return ProviderError(
            f"{provider} sent nothing within the stream idle timeout "
            "(config agent.streamIdleTimeout)",
            retryable=True,
            reason="no answer within the idle timeout",
        )
    if isinstance(exc, sdk.APIConnectionError | transport_error):
        return stream_cut(provider, exc) if midstream else connection_error(provider, exc)
    if isinstance(exc, sdk.APIError):
        # An error object inside the stream: the server failed while answering.
        return ProviderError(f"{provider} error: {exc.message}", retryable=True)
    return ProviderError(f"{provider}: unexpected failure: {_describe(exc)}")


def _is_timeout(sdk: Any, exc: BaseException) -> bool:
    """The SDK's timeout before headers, or httpx2's ReadTimeout while reading the body."""
    return isinstance(exc, sdk.APITimeoutError) or type(exc).__name__ in (
        "ReadTimeout",
        "PoolTimeout",
    )


def _describe(exc: BaseException) -> str:
    """The exception's kind and reason, never its arguments (they can hold the request)."""
    if isinstance(exc, UnicodeError) and hasattr(exc, "reason"):
        return f"{type(exc).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def parse_tool_input(raw: str) -> dict[str, Any]:
    """Parse streamed tool input; see base.INVALID_INPUT_KEY for what bad input becomes."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {INVALID_INPUT_KEY: raw}
    return value if isinstance(value, dict) else {INVALID_INPUT_KEY: raw}

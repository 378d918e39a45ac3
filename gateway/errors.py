"""GatewayError catalogue: status, type and code in one place, rendered per client dialect.

OpenAI routes get `{"error": {message, type, param, code}}`; Anthropic routes get
`{"type": "error", "error": {type, message}}`. Type strings follow each provider's error reference.
"""

from __future__ import annotations

from typing import Any

from gateway.scrub import scrub


class GatewayError(Exception):
    status = 500
    type = "api_error"  # OpenAI dialect
    anthropic_type = "api_error"
    code: str | None = None
    retryable = False

    def __init__(self, message: str, param: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    status, type, anthropic_type = 400, "invalid_request_error", "invalid_request_error"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class ContextLengthExceeded(InvalidRequest):
    """The prompt plus the requested output cannot fit any route's context window (OpenAI's code)."""

    code = "context_length_exceeded"


class MissingApiKey(GatewayError):
    status, type, anthropic_type, code = 401, "invalid_request_error", "authentication_error", "missing_api_key"


class InvalidApiKey(GatewayError):
    status, type, anthropic_type, code = 401, "invalid_request_error", "authentication_error", "invalid_api_key"


class InsufficientCredits(GatewayError):
    status, type, anthropic_type, code = 402, "insufficient_quota", "billing_error", "insufficient_credits"


class PermissionDenied(GatewayError):
    status, type, anthropic_type, code = 403, "permission_error", "permission_error", "insufficient_scope"


class ModelNotFound(GatewayError):
    status, type, anthropic_type, code = 404, "invalid_request_error", "not_found_error", "model_not_found"


class NotFound(GatewayError):
    status, type, anthropic_type, code = 404, "invalid_request_error", "not_found_error", "not_found"


class MethodNotAllowed(GatewayError):
    status, type, anthropic_type, code = 405, "invalid_request_error", "invalid_request_error", "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status, type, anthropic_type, code = 413, "invalid_request_error", "request_too_large", "request_too_large"


class RateLimited(GatewayError):
    status, type, anthropic_type, code = 429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"


class IdempotencyKeyReused(GatewayError):
    """The Idempotency-Key names an earlier request with a different body."""

    status, type, anthropic_type, code = 422, "invalid_request_error", "invalid_request_error", "idempotency_key_reused"


class IdempotencyKeyInUse(GatewayError):
    """The request the Idempotency-Key names is still running: retry after `retry_after` seconds."""

    status, type, anthropic_type, code = 409, "invalid_request_error", "invalid_request_error", "idempotency_key_in_use"

    def __init__(self, message: str, retry_after: float = 1) -> None:
        super().__init__(message, param="Idempotency-Key")
        self.retry_after = retry_after


class BudgetExceeded(GatewayError):
    """A hard budget (org, user, app or key) has no room for this request."""

    status, type, anthropic_type, code = 429, "insufficient_quota", "rate_limit_error", "budget_exceeded"


class DlpBlocked(InvalidRequest):
    """A data-protection rule with the `block` action matched: nothing was sent."""

    code = "dlp_blocked"


class DlpUnavailable(GatewayError):
    """Protection is on and the check could not run: the request is refused, never sent unchecked."""

    status, type, anthropic_type, code = 503, "api_error", "api_error", "dlp_unavailable"


class InternalError(GatewayError):
    status, type, anthropic_type, code = 500, "api_error", "api_error", "internal_error"


class ShuttingDown(GatewayError):
    """The server is stopping and its drain timeout has passed (pipeline/drain.py)."""

    status, type, anthropic_type, code = 503, "api_error", "api_error", "server_shutting_down"

    def __init__(self, message: str = "The server is shutting down; retry the request.") -> None:
        super().__init__(message)


class UpstreamError(GatewayError):
    """An upstream failure, mapped: the provider's raw body never reaches the client.

    `retryable` tells dispatch whether the next route may be tried.
    """

    status, type, anthropic_type, code = 502, "api_error", "api_error", "upstream_error"

    def __init__(self, message: str, *, status: int = 502, retryable: bool = True,
                 upstream_status: int | None = None, retry_after: float | None = None,
                 type: str | None = None, anthropic_type: str | None = None, code: str | None = None):
        # Upstream text may echo our provider key: scrubbed here, before any dialect renders it,
        # any stream event carries it or the ledger stores it.
        super().__init__(scrub(message))
        self.status = status
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        if type:
            self.type = type
        if anthropic_type:
            self.anthropic_type = anthropic_type
        if code:
            self.code = code


class ByokKeyRejected(UpstreamError):
    """The provider refused the org's own key (BYOK): the org must fix it; never retried with ours."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401, retryable=False, type="invalid_request_error",
                         anthropic_type="authentication_error", code="byok_key_rejected")


class StreamTruncated(UpstreamError):
    """An upstream stream that ended without its terminal event (no `[DONE]`, no `message_stop`, a reset)."""

    def __init__(self) -> None:
        super().__init__("The upstream provider ended the stream before it was complete.")


class MalformedStream(UpstreamError):
    """An upstream stream event that is not what its wire format promises (bad JSON, wrong shape)."""

    def __init__(self) -> None:
        super().__init__("The upstream provider sent a malformed stream.")


class InvalidUpstreamResponse(UpstreamError):
    """An upstream answer that is not what its wire format promises (unparsable, wrong shape)."""

    def __init__(self) -> None:
        super().__init__("The upstream provider returned an invalid response.")


class UpstreamTimeout(UpstreamError):
    type, anthropic_type, code = "timeout_error", "timeout_error", "upstream_timeout"

    def __init__(self, message: str = "The upstream provider timed out.") -> None:
        super().__init__(message, status=504, retryable=True)


def cannot_serve(message: str) -> UpstreamError:
    """This route cannot carry what the client sent; retryable, so a fallback route may still serve it."""
    return UpstreamError(message, status=400, retryable=True, type="invalid_request_error",
                         anthropic_type="invalid_request_error")


def as_openai(e: GatewayError) -> dict[str, Any]:
    return {"error": {"message": scrub(e.message), "type": e.type, "param": e.param, "code": e.code}}


def as_anthropic(e: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": e.anthropic_type, "message": scrub(e.message)}}


RENDERERS = {"openai": as_openai, "anthropic": as_anthropic}


def render(e: GatewayError, dialect: str) -> dict[str, Any]:
    return RENDERERS.get(dialect, as_openai)(e)


# Upstream HTTP status -> (gateway status, retryable). 4xx from the client's own request are
# passed on with their status; auth problems with our provider key become 502 (not the client's fault).
def classify_upstream_status(status: int) -> tuple[int, bool]:
    if status in (401, 403):
        return 502, True
    if status == 429:
        return 429, True
    if status == 408:
        return 504, True
    if status == 404:  # the route's upstream model is gone: a config problem, try the next route
        return 502, True
    if status in (400, 409, 413, 422):
        return (400 if status in (409, 422) else status), False
    if status >= 500:
        return 502, True
    return 502, False


def from_upstream_status(status: int, message: str | None = None, *, retry_after: float | None = None,
                         code: str | None = None) -> UpstreamError:
    """An upstream error status, mapped onto the catalogue once for every adapter.

    `message` is the provider's own text, already scrubbed of secrets by the adapter; it reaches
    the client only for the client's own 4xx (whose fault it is). 429 keeps `retry_after`; 529
    (Anthropic's "overloaded") is retried like a 503.
    """
    mapped, retryable = classify_upstream_status(status)
    if mapped in (400, 413):
        return UpstreamError(message or "The upstream provider rejected the request.", status=mapped,
                             retryable=False, upstream_status=status, type="invalid_request_error",
                             anthropic_type="request_too_large" if mapped == 413 else "invalid_request_error",
                             code=code)
    if mapped == 429:
        return UpstreamError("The upstream provider is rate limiting requests; retry later.", status=429,
                             retryable=True, upstream_status=status, retry_after=retry_after,
                             type="rate_limit_error", anthropic_type="rate_limit_error",
                             code="rate_limit_exceeded")
    if mapped == 504:
        return UpstreamTimeout()
    what = "is overloaded" if status == 529 else "returned an error"
    return UpstreamError(f"The upstream provider {what} (HTTP {status}).", status=mapped, retryable=retryable,
                         upstream_status=status)


def retry_after_seconds(value: str | None) -> float | None:
    """A `retry-after` header in seconds (the HTTP-date form is not used by providers)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def stream_failed() -> UpstreamError:
    """The upstream reported a failure inside a stream whose status line already said 200."""
    return UpstreamError("The upstream provider reported an error during the stream.", retryable=False)


class Conflict(GatewayError):
    """The resource is not in a state that allows this (a finished batch cancelled)."""
    status, type, anthropic_type, code = 409, "invalid_request_error", "invalid_request_error", "conflict"

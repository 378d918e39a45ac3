"""Auth: API key -> principal, from the in-memory map only (enforcing)."""

from __future__ import annotations

from gateway.crypto import digest
from gateway.errors import InvalidApiKey, MissingApiKey
from gateway.memo import MEMO
from gateway.pipeline.context import Reply, RequestContext

name, enforcing = "auth", True


def extract_key(headers) -> str | None:
    """Bearer token (OpenAI clients) or `x-api-key` (Anthropic clients)."""
    value = headers.get("Authorization")
    if value:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


def before(ctx: RequestContext) -> Reply | None:
    if not ctx.raw_key:
        raise MissingApiKey(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY) or in an x-api-key header."
        )
    principal = MEMO.principal(digest(ctx.raw_key))
    if principal is None:
        raise InvalidApiKey("Incorrect API key provided.")
    ctx.principal = principal
    return None

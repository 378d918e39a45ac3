"""POST /v1/messages and POST /v1/messages/count_tokens (Anthropic Messages)."""

from __future__ import annotations

from gateway.api import bp
from gateway.api.inference import handle


@bp.post("/messages")
def messages():
    return handle("messages", "anthropic")


@bp.post("/messages/count_tokens")
def count_tokens():
    """One policy point: auth and the gate apply, and the ledger gets a row (charged nothing)."""
    return handle("messages.count_tokens", "anthropic")

"""Compatibility aliases outside /v1: POST /api/v1/llm/chat and /api/v1/llm/chat/stream.

Both are chat completions under another name: same body, auth, pipeline, responses and OpenAI
error shapes. The stream alias always streams (`stream: true` is set on the body it was sent).
"""

from __future__ import annotations

import orjson
from flask import Blueprint, request

from gateway.api.inference import handle

bp = Blueprint("api_v1", __name__)


@bp.post("/llm/chat")
def llm_chat():
    return handle("chat.completions", "openai")


@bp.post("/llm/chat/stream")
def llm_chat_stream():
    return handle("chat.completions", "openai", raw=force_stream(request.get_data(cache=False)))


def force_stream(raw: bytes) -> bytes:
    """The body with `stream: true`. A body that is not a JSON object is left as sent, so the
    pipeline rejects it with the same error as /v1/chat/completions would."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(body, dict) or body.get("stream") is True:
        return raw
    body["stream"] = True
    return orjson.dumps(body)

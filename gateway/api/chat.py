"""POST /v1/chat/completions (OpenAI Chat Completions)."""

from __future__ import annotations

from gateway.api import bp
from gateway.api.inference import handle


@bp.post("/chat/completions")
def chat_completions():
    return handle("chat.completions", "openai")

"""POST /v1/embeddings (OpenAI Embeddings): authenticated, gated, routed and metered like chat."""

from __future__ import annotations

from gateway.api import bp
from gateway.api.inference import handle


@bp.post("/embeddings")
def embeddings():
    return handle("embeddings", "openai")

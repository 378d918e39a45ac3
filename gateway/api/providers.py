"""GET /v1/providers: configured providers and the live health of each of their routes (never keys)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from flask import Response, request

from gateway.api.blueprint import bp, dialect_for, error_response
from gateway.errors import GatewayError
from gateway.memo import MEMO, ProviderInfo
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext
from gateway.routing.health import HEALTH


def host_of(base_url: str) -> str:
    """Host and port only: no scheme, path, query or userinfo, which may carry credentials."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def provider_object(provider: ProviderInfo) -> dict[str, Any]:
    routes = []
    for model in MEMO.catalog.models.values():
        for i, r in enumerate(model.routes):
            if r.provider.id == provider.id:
                routes.append({"id": r.id, "model": r.model_slug, "upstream_model": r.upstream_model,
                               "reference": i == 0, "health": HEALTH.describe(r.id)})
    routes.sort(key=lambda r: (r["model"], r["id"]))
    return {"id": provider.name, "object": "provider", "kind": provider.kind,
            "host": host_of(provider.base_url), "enabled": provider.enabled, "routes": routes}


@bp.get("/providers")
def list_providers():
    try:
        ctx = RequestContext("providers", "openai", b"", request.headers, auth.extract_key(request.headers))
        auth.before(ctx)  # any valid key, whatever its scope
    except GatewayError as e:
        return error_response(e, dialect_for(request.path))
    data = [provider_object(p) for p in sorted(MEMO.catalog.providers.values(), key=lambda p: p.name)]
    return Response(orjson.dumps({"object": "list", "data": data}), content_type="application/json")

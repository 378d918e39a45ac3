"""GET /v1/providers: configured providers (name, kind, enabled) and the live health of each of
their routes, to any valid key. Never a key, host, port or URL (an API caller learns nothing about
the network behind the gateway), and request counts of the caller's own org only."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request

from gateway.api.blueprint import bp, dialect_for, error_response
from gateway.errors import GatewayError
from gateway.memo import MEMO, ProviderInfo
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext
from gateway.routing.health import HEALTH


def provider_object(provider: ProviderInfo, org_id: int) -> dict[str, Any]:
    routes = []
    for model in MEMO.catalog.models.values():
        for i, r in enumerate(model.routes):
            if r.provider.id == provider.id:
                routes.append({"id": r.id, "model": r.model_slug, "upstream_model": r.upstream_model,
                               "reference": i == 0, "health": HEALTH.describe_for_org(r.id, org_id)})
    routes.sort(key=lambda r: (r["model"], r["id"]))
    return {"id": provider.name, "object": "provider", "kind": provider.kind,
            "enabled": provider.enabled, "routes": routes}


@bp.get("/providers")
def list_providers():
    try:
        ctx = RequestContext("providers", "openai", b"", request.headers, auth.extract_key(request.headers))
        auth.before(ctx)  # any valid key, whatever its scope
    except GatewayError as e:
        return error_response(e, dialect_for(request.path))
    org_id = ctx.principal.org_id
    data = [provider_object(p, org_id) for p in sorted(MEMO.catalog.providers.values(), key=lambda p: p.name)]
    return Response(orjson.dumps({"object": "list", "data": data}), content_type="application/json")

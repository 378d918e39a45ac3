"""GET /v1/models and GET /v1/models/{slug}: slugs and aliases, with prices and context windows."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request

from gateway.api.blueprint import bp, dialect_for, error_response
from gateway.errors import GatewayError, ModelNotFound
from gateway.ledger.pricing import usd
from gateway.memo import MEMO, Catalog, ModelInfo, Principal
from gateway.pipeline import auth
from gateway.pipeline.context import RequestContext

CREATED = 1_700_000_000  # the catalog has no upstream creation dates; a fixed epoch keeps listings stable


def _principal() -> Principal:
    ctx = RequestContext("models", "openai", b"", request.headers, auth.extract_key(request.headers))
    auth.before(ctx)
    assert ctx.principal is not None
    return ctx.principal


def _price(value: int | None) -> str | None:
    return None if value is None else usd(value)


def model_object(model: ModelInfo, alias: str | None = None) -> dict[str, Any]:
    ref = model.reference
    obj: dict[str, Any] = {
        "id": alias or model.slug,
        "object": "model",
        "created": CREATED,
        "owned_by": model.slug.split("/", 1)[0] if "/" in model.slug else (ref.provider.name if ref else "gateway"),
        "context_window": model.context_window or (ref.context_window if ref else None),
        "max_output_tokens": model.max_output_tokens,
        "pricing": {  # USD per million tokens, at the reference route
            "input_per_mtok": _price(ref.input_micros_per_mtok if ref else None),
            "output_per_mtok": _price(ref.output_micros_per_mtok if ref else None),
            "cached_input_per_mtok": _price(ref.cached_input_micros_per_mtok if ref else None),
        },
        "routes": [
            {"provider": r.provider.name, "upstream_model": r.upstream_model, "reference": i == 0,
             "input_per_mtok": _price(r.input_micros_per_mtok), "output_per_mtok": _price(r.output_micros_per_mtok),
             "cached_input_per_mtok": _price(r.cached_input_micros_per_mtok), "context_window": r.context_window}
            for i, r in enumerate(model.routes)
        ],
    }
    if alias:
        obj["alias_for"] = model.slug
    return obj


def _visible_aliases(catalog: Catalog, org_id: int) -> dict[str, str]:
    out = {name: a.target for (owner, name), a in catalog.aliases.items() if owner is None}
    out.update({name: a.target for (owner, name), a in catalog.aliases.items() if owner == org_id})
    return out


def _json(obj: Any) -> Response:
    return Response(orjson.dumps(obj), content_type="application/json")


@bp.get("/models")
def list_models():
    try:
        principal = _principal()
    except GatewayError as e:
        return error_response(e, dialect_for(request.path))
    catalog = MEMO.catalog
    data = [model_object(m) for m in sorted(catalog.models.values(), key=lambda m: m.slug) if m.routes]
    for name, target in sorted(_visible_aliases(catalog, principal.org_id).items()):
        model = catalog.models.get(target)
        if model is not None and model.routes:
            data.append(model_object(model, alias=name))
    return _json({"object": "list", "data": data})


@bp.get("/models/<path:slug>")
def get_model(slug: str):
    try:
        principal = _principal()
        model = MEMO.catalog.resolve(slug, principal.org_id)
        if model is None or not model.routes:
            raise ModelNotFound(f"The model `{slug}` does not exist or you do not have access to it.", param="model")
    except GatewayError as e:
        return error_response(e, dialect_for(request.path))
    return _json(model_object(model, alias=slug if slug != model.slug else None))

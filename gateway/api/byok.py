"""BYOK keys over the API: POST/GET /v1/byok/keys, DELETE /v1/byok/keys/{id} (and the same under
/api/v1). Admin-scope keys only, and only for the key's own org; a key is shown masked (its last
four characters), never in full. Errors in OpenAI's shape."""

from __future__ import annotations

from flask import current_app

from gateway import db
from gateway.api.blueprint import atlas, bp, error_response
from gateway.api.principals import admin_principal, as_json, json_object, only_params
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.services import byok
from gateway.services.errors import AdminError


def _actor(p) -> str:
    return f"api-key:{p.key_id}"


@bp.post("/byok/keys")
@atlas.post("/byok/keys")
def byok_add():
    try:
        p = admin_principal()
        only_params(())
        body = json_object()
        unknown = sorted(set(body) - {"provider", "api_key"})
        if unknown:
            raise InvalidRequest(f"Unknown parameter '{unknown[0][:64]}'.", param=unknown[0][:64])
        secret = current_app.extensions["settings"].secret_key
        with db.write_lock, db.session_scope() as session:
            try:
                view = byok.add_key(session, p.org_id, body.get("provider"), body.get("api_key"), secret,
                                    _actor(p))
            except AdminError as e:
                raise InvalidRequest(str(e), param="api_key" if "api_key" in str(e) else "provider") from None
    except GatewayError as e:
        return error_response(e, "openai")
    return as_json(view.as_json(), 201)


@bp.get("/byok/keys")
@atlas.get("/byok/keys")
def byok_list():
    try:
        p = admin_principal()
        only_params(())
    except GatewayError as e:
        return error_response(e, "openai")
    with db.session_scope() as session:
        views = byok.list_keys(session, p.org_id)
    return as_json({"object": "list", "data": [v.as_json() for v in views]})


@bp.delete("/byok/keys/<key_id>")
@atlas.delete("/byok/keys/<key_id>")
def byok_delete(key_id: str):
    try:
        p = admin_principal()
        only_params(())
        if not key_id.isdigit() or len(key_id) > 18:
            raise NotFound(f"No BYOK key with id '{key_id[:32]}'.")
        with db.write_lock, db.session_scope() as session:
            if not byok.delete_key(session, p.org_id, int(key_id), _actor(p)):
                raise NotFound(f"No BYOK key with id '{key_id[:32]}'.")
    except GatewayError as e:
        return error_response(e, "openai")
    return as_json({"id": int(key_id), "object": "byok_key.deleted", "deleted": True})

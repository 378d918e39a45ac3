"""API keys over the API: `POST /v1/api-keys` (body `name`, `scope`, optional `user` (email or id)
or `app` (slug or id); the secret is in this answer only), `GET /v1/api-keys` (never the secret),
`DELETE /v1/api-keys/{id}` (revokes). Admin-scope keys only, for the key's own org; the writes are
services/tenancy.py's (audited, announced, the plan's max_keys enforced). OpenAI error shapes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gateway import db
from gateway.api.account import epoch
from gateway.api.blueprint import bp, error_response
from gateway.api.principals import admin_principal, as_json, json_object, only_params
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.models import ApiKey, App, Org, User
from gateway.services import tenancy
from gateway.services.tenancy import AccountError

FIELDS = frozenset({"name", "scope", "user", "app"})


def _key_json(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "object": "api_key", "name": k.name, "scope": k.scope, "prefix": k.prefix,
            "user_id": k.user_id, "app_id": k.app_id, "created_at": epoch(k.created_at),
            "revoked_at": epoch(k.revoked_at) if k.revoked_at else None}


def _owner(session, model, org_id: int, value: Any, field: str, column) -> int | None:
    """A user (by email or id) or an app (by slug or id) of the org, else a 400 naming the field."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        row = session.get(model, value)
    elif isinstance(value, str) and value.strip():
        row = session.scalar(select(model).where(column == value.strip(), model.org_id == org_id))
    else:
        raise InvalidRequest(f"'{field}' must be a string or an id.", param=field)
    if row is None or row.org_id != org_id:
        raise InvalidRequest(f"No {field} '{str(value)[:64]}' in your organization.", param=field)
    return row.id


@bp.post("/api-keys")
def api_key_create():
    try:
        p = admin_principal()
        only_params(())
        body = json_object()
        if unknown := sorted(set(body) - FIELDS):
            raise InvalidRequest(f"Unknown parameter '{unknown[0][:64]}'.", param=unknown[0][:64])
        name, scope = body.get("name", ""), body.get("scope", "inference")
        if not isinstance(name, str):
            raise InvalidRequest("'name' must be a string.", param="name")
        if scope not in tenancy.SCOPES:
            raise InvalidRequest(f"'scope' must be one of {', '.join(tenancy.SCOPES)}.", param="scope")
        with db.write_lock, db.session_scope() as session:
            user_id = _owner(session, User, p.org_id, body.get("user"), "user", User.email)
            app_id = _owner(session, App, p.org_id, body.get("app"), "app", App.slug)
            try:
                new = tenancy.create_key(session, session.get(Org, p.org_id), name=name.strip(), scope=scope,
                                         actor=f"api-key:{p.key_id}", user_id=user_id, app_id=app_id)
            except AccountError as e:
                message = str(e)
                raise InvalidRequest(message[:1].upper() + message[1:] + ".",
                                     param="name" if "name" in message else None) from None
            out = {**_key_json(new.key), "key": new.secret}
    except GatewayError as e:
        return error_response(e, "openai")
    return as_json(out, 201)


@bp.get("/api-keys")
def api_key_list():
    try:
        p = admin_principal()
        only_params(())
    except GatewayError as e:
        return error_response(e, "openai")
    with db.session_scope() as session:
        keys = tenancy.list_keys(session, [p.org_id])
        return as_json({"object": "list", "data": [_key_json(k) for k in keys]})


@bp.delete("/api-keys/<key_id>")
def api_key_delete(key_id: str):
    try:
        p = admin_principal()
        only_params(())
        with db.write_lock, db.session_scope() as session:
            key = session.get(ApiKey, int(key_id)) if key_id.isdigit() and len(key_id) < 19 else None
            if key is None or key.org_id != p.org_id:
                raise NotFound(f"No API key with id '{key_id[:32]}'.")
            tenancy.revoke_key(session, key, actor=f"api-key:{p.key_id}")
    except GatewayError as e:
        return error_response(e, "openai")
    return as_json({"id": int(key_id), "object": "api_key.deleted", "deleted": True})

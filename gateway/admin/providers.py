"""Providers console page (super-admins only: base URLs and key sources are deployment secrets'
neighbours, so org admins get 403 rather than a redacted list): list, add, edit, disable, delete."""

from __future__ import annotations

from typing import Any

import yaml
from flask import abort, current_app, request
from sqlalchemy import func, select

from gateway import db
from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_superadmin, write
from gateway.db import request_session
from gateway.memo import MEMO
from gateway.models import Provider, Route
from gateway.routing.health import CLOSED, HEALTH
from gateway.services import providers as provider_service
from gateway.services.errors import AdminError
from gateway.settings import environ_value

PAGE, TABLE, FORM = "admin/providers/index.html", "admin/providers/_table.html", "admin/providers/_form.html"
EVENT = "providers-changed"


def secret_key() -> str:
    return current_app.extensions["settings"].secret_key


def refresh_catalog() -> None:
    """Reload this process's catalog now, so the page shows what the next request will use; other
    processes reload it from the change log within a second."""
    with db.session_scope() as session:
        MEMO.reload(session, "catalog")
    request_session().expire_all()


def config_names() -> set[str]:
    """Providers declared in GATEWAY_CONFIG: it is re-applied at every start, over edits made here."""
    path = current_app.extensions["settings"].config_path
    try:
        config = yaml.safe_load(path.read_text()) if path else None
        return {str(p.get("name")) for p in (config or {}).get("providers") or [] if isinstance(p, dict)}
    except (OSError, yaml.YAMLError, AttributeError):
        return set()


def _health(provider_id: int) -> dict[str, Any]:
    """This process's live health over the provider's routes in force (see Provider Load)."""
    found = [HEALTH.describe(r.id) for m in MEMO.catalog.models.values() for r in m.routes
             if r.provider.id == provider_id]
    return {
        "routes": len(found),
        "requests": sum(h["last_hour"]["requests"] for h in found),
        "errors": sum(h["last_hour"]["errors"] for h in found),
        "not_closed": sum(h["state"] != CLOSED for h in found),
        "in_flight": sum(h["in_flight"] for h in found),
    }


def rows() -> list[dict[str, Any]]:
    session = request_session()
    counts = dict(session.execute(select(Route.provider_id, func.count()).group_by(Route.provider_id)).tuples().all())
    declared = config_names()
    return [{"p": p, "url": provider_service.shown_url(p.base_url), "key": provider_service.key_status(p),
             "source": provider_service.key_source(p, p.name in declared),
             "env_set": bool(p.api_key_env) and environ_value(p.api_key_env) is not None,
             "routes": counts.get(p.id, 0), "health": _health(p.id), "config": p.name in declared}
            for p in session.scalars(select(Provider).order_by(Provider.name)).all()]


def _page(partial: str, form: dict[str, Any] | None = None, editing: Provider | None = None, **kw: Any):
    form = form or {"kind": "openai", "enabled": True, "responses_api": "auto", "batch_api": "auto",
                    "add_defaults": True}
    from gateway.services import ollama as ollama_service

    return reply(PAGE, partial, rows=rows(), form=form, editing=editing, kinds=provider_service.kinds(),
                 detected=ollama_service.offer(),
                 examples=provider_service.BASE_URL_EXAMPLES, default_kinds=sorted(provider_service.default_kinds()),
                 **kw)


def _provider(provider_id: int) -> Provider:
    p = request_session().get(Provider, provider_id)
    if p is None:
        abort(404)
    return p


@bp.get("/providers")
def providers():
    require_superadmin()
    return _page(TABLE)


@bp.get("/providers/<int:provider_id>/edit")
def provider_edit(provider_id: int):
    require_superadmin()
    p = _provider(provider_id)
    form = {"name": p.name, "kind": p.kind, "base_url": provider_service.shown_url(p.base_url),
            "api_key_env": p.api_key_env or "", "enabled": p.enabled, "allow_private": p.allow_private,
            "responses_api": {None: "auto", True: "yes", False: "no"}[p.responses_api],
            "batch_api": {None: "auto", True: "yes", False: "no"}[p.batch_api]}
    return _page(FORM, form=form, editing=p)


@bp.post("/providers")
def provider_save():
    require_superadmin()
    form = request.form.to_dict()
    raw_id = form.get("provider_id") or ""
    provider_id = int(raw_id) if raw_id.isdigit() else None
    typed_key = bool(form.pop("api_key", "").strip())  # never rendered back, not even after an error
    try:
        change = write(provider_service.put_provider, {**request.form.to_dict()}, secret_key(), provider_id)
    except AdminError as e:
        editing = _provider(provider_id) if provider_id is not None else None
        error = str(e) + (" The API key was not saved: enter it again." if typed_key else "")
        return _page(FORM, form=form, editing=editing, error=error)
    refresh_catalog()
    p = change.provider
    notice = f"{'Added' if change.created else 'Saved'} provider {p.name}; it applies from the next request."
    if change.added_models:
        notice += f" Default models added: {', '.join(change.added_models)}."
    if change.skipped_models:
        notice += f" Left as they were (already routed): {', '.join(change.skipped_models)}."
    if change.created and provider_service.truthy(form.get("add_defaults")) and not (
            change.added_models or change.skipped_models):
        notice += f" The default catalog has no models for kind {p.kind}: add them on Available Models."
    return _page(FORM, notice=notice, event=EVENT)


@bp.post("/providers/<int:provider_id>/enabled")
def provider_toggle(provider_id: int):
    require_superadmin()
    enabled = provider_service.truthy(request.form.get("enabled"))
    try:
        p = write(provider_service.set_provider_enabled, provider_id, enabled)
    except AdminError:
        abort(404)
    refresh_catalog()
    notice = (f"Enabled {p.name}: its routes are back in service." if enabled else
              f"Disabled {p.name}: routing skips its routes; a model with no other route is not served.")
    return _page(TABLE, notice=notice)  # the refreshed rows themselves (an event would swap out the notice)


@bp.post("/providers/<int:provider_id>/delete")
def provider_delete(provider_id: int):
    require_superadmin()
    name = _provider(provider_id).name
    try:
        removed = write(provider_service.delete_provider, provider_id)
    except AdminError:
        abort(404)
    refresh_catalog()
    notice = f"Deleted provider {name} and its routes."
    if removed:
        notice += f" Models removed (no route left): {', '.join(removed)}."
        dangling = provider_service.still_named(request_session(), removed)
        if dangling:
            notice += f" Still naming them: {', '.join(dangling)}."
    return _page(TABLE, notice=notice)


@bp.post("/providers/<int:provider_id>/key")
def provider_key_set(provider_id: int):
    """Save a key in the console: it wins over the config and the environment, at every start, until reset."""
    require_superadmin()
    try:
        p = write(provider_service.set_console_key, provider_id, request.form.get("api_key"), secret_key())
    except AdminError as e:
        if "no longer exists" in str(e):
            abort(404)
        return _page(TABLE, notice=f"Key not saved: {e}")
    refresh_catalog()
    return _page(TABLE, notice=f"Saved a key for {p.name} in the console (…{p.console_key_hint}): it is used from "
                               "the next request and at every start, over the config and the environment, until reset.")


@bp.post("/providers/<int:provider_id>/key/reset")
def provider_key_reset(provider_id: int):
    """Forget the console's key: back to the config's or the environment's."""
    require_superadmin()
    try:
        p = write(provider_service.reset_console_key, provider_id)
    except AdminError as e:
        if "no longer exists" in str(e):
            abort(404)
        return _page(TABLE, notice=str(e))
    refresh_catalog()
    source = provider_service.key_source(p, p.name in config_names())
    return _page(TABLE, notice=f"Reset the key of {p.name}: now {source}.")

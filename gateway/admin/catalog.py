"""Available Models console page: the catalog in force, with routes, prices, capabilities and reference;
for super-admins, the model editor (add, edit and delete routes; a model goes with its last route)."""

from __future__ import annotations

from typing import Any

from flask import abort, request
from flask_login import current_user
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import removed as removed_reply
from gateway.admin.editing import reply, require_superadmin, write
from gateway.admin.providers import refresh_catalog
from gateway.db import request_session
from gateway.htmx import is_htmx, render_page_or_partial
from gateway.memo import MEMO
from gateway.models import Model, Provider, Route
from gateway.services import providers as provider_service
from gateway.services.errors import AdminError
from gateway.web.catalog import CAPABILITY_LABELS, cards

PAGE, TABLE = "admin/models/index.html", "admin/models/_table.html"
ROUTE_FORM, UNSERVED = "admin/models/_route_form.html", "admin/models/_unserved.html"
EVENT = "catalog-changed"


def _found(query: str) -> list[dict[str, Any]]:
    return [m for m in cards() if query in m["slug"].lower()
            or any(query in p.lower() for p in m["providers"])] if query else cards()


def unserved() -> list[dict[str, Any]]:
    """Routes on a disabled provider (routing skips them, so the table above leaves them out), by
    model, so they can still be edited or deleted; `served` is False when the model has no other."""
    session = request_session()
    disabled = {p.id: p for p in session.scalars(select(Provider).where(Provider.enabled.is_(False))).all()}
    if not disabled:
        return []
    out = []
    for model in session.scalars(select(Model).order_by(Model.slug)).all():
        routes = session.scalars(select(Route).where(Route.model_id == model.id, Route.provider_id.in_(list(disabled)))
                                 .order_by(Route.position, Route.id)).all()
        if routes:
            served = MEMO.catalog.models.get(model.slug)
            out.append({"model": model, "served": bool(served and served.routes),
                        "routes": [(r, disabled[r.provider_id]) for r in routes]})
    return out


def _editor(form: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the editor needs (super-admins only; others see the read-only page)."""
    if not current_user.is_superadmin:
        return {"editor": False}
    session = request_session()
    return {
        "editor": True,
        "form": form or {"capabilities_mode": "all", "weight": 1},
        "providers": session.scalars(select(Provider).order_by(Provider.name)).all(),
        "slugs": session.scalars(select(Model.slug).order_by(Model.slug)).all(),
        "capability_labels": CAPABILITY_LABELS,
        "unserved": unserved(),
    }


@bp.get("/models")
def models():
    query = (request.args.get("q") or "").strip().lower()
    return render_page_or_partial(PAGE, TABLE, models=_found(query), q=query, **_editor())


def _editor_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    require_superadmin()
    return reply(PAGE, partial, models=_found(""), q="", **_editor(form), **kw)


@bp.get("/models/unserved")
def model_unserved():
    return _editor_page(UNSERVED)


@bp.get("/models/routes/new")
def model_route_new():
    """The editor, empty, or for one more route of `?slug=` (its model's values filled in)."""
    form: dict[str, Any] = {"capabilities_mode": "all", "weight": 1}
    model = request_session().scalar(select(Model).where(Model.slug == (request.args.get("slug") or "")))
    if model is not None:
        form.update(slug=model.slug, context_window=model.context_window or "",
                    max_output_tokens=model.max_output_tokens or "")
    return _editor_page(ROUTE_FORM, form=form)


@bp.get("/models/routes/<int:route_id>/edit")
def model_route_edit(route_id: int):
    require_superadmin()
    session = request_session()
    route = session.get(Route, route_id)
    if route is None:
        abort(404)
    form = provider_service.route_form(route, session.get(Model, route.model_id), session.get(Provider, route.provider_id))
    return _editor_page(ROUTE_FORM, form=form)


@bp.post("/models/routes")
def model_route_save():
    require_superadmin()
    form: dict[str, Any] = request.form.to_dict()
    form["capabilities"] = request.form.getlist("capabilities")
    raw_id = str(form.get("route_id") or "")
    route_id = int(raw_id) if raw_id.isdigit() else None
    try:
        route = write(provider_service.put_route, form, route_id)
    except AdminError as e:
        form["reference"] = provider_service.truthy(form.get("reference"))
        return _editor_page(ROUTE_FORM, form=form, error=str(e))
    refresh_catalog()
    slug = request_session().get(Model, route.model_id).slug
    notice = (f"Saved the route of {slug} via {form.get('provider')}/{route.upstream_model}; "
              "it applies from the next request.")
    return _editor_page(ROUTE_FORM, notice=notice, event=EVENT)


@bp.post("/models/routes/<int:route_id>/delete")
def model_route_delete(route_id: int):
    require_superadmin()
    try:
        gone = write(provider_service.delete_route, route_id)
    except AdminError:
        abort(404)
    refresh_catalog()
    dangling = provider_service.still_named(request_session(), [gone]) if gone else []
    if dangling and is_htmx():  # say so in the editor, not silently: those names now resolve to nothing
        resp = _editor_page(ROUTE_FORM, event=EVENT, notice=f"Deleted the last route of {gone}, so the model is "
                            f"gone. Still naming it: {', '.join(dangling)}.")
        resp.headers["HX-Retarget"], resp.headers["HX-Reswap"] = "#route-form", "outerHTML"
        return resp
    return removed_reply("admin.models", EVENT)  # the route's line goes; the tables refresh on the event

"""Routing console: Model Router (aliases), Fallback Chains, Routing Strategy and Provider Load."""

from __future__ import annotations

from typing import Any

import orjson
from flask import abort, request
from flask_login import current_user
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import (
    GLOBAL,
    delete,
    editable_or_404,
    parse_scope,
    reply,
    require_superadmin,
    scope_choices,
    scoped_rows,
    write,
)
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.memo import MEMO
from gateway.models import Alias, Fallback, Model
from gateway.routing import settings as routing_settings
from gateway.routing.health import HEALTH
from gateway.routing.strategies import STRATEGIES
from gateway.services import routing as routing_service
from gateway.services.errors import AdminError
from gateway.services.routing import alias_targets

STRATEGY_HELP = {
    "priority": "catalog order: the reference route first, then the others",
    "cheapest": "lowest input + output price per Mtok first",
    "fastest": "lowest measured latency (EWMA) first; unmeasured routes last",
    "weighted": "first route drawn at random in proportion to its weight",
    "least_busy": "fewest requests in flight first",
}


def _slugs() -> list[str]:
    return list(request_session().scalars(select(Model.slug).order_by(Model.slug)).all())


# ---- Model Router ------------------------------------------------------------------------------

def _alias_rows() -> list[dict[str, Any]]:
    return [{**row, "targets": alias_targets(row["alias"])}
            for row in scoped_rows(request_session(), Alias, "alias")]


def _alias_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    form = form or {"scope": str(current_user.org_id) if not current_user.is_superadmin else GLOBAL}
    return reply("admin/aliases/index.html", partial, rows=_alias_rows(), form=form,
                 scopes=scope_choices(request_session()), slugs=_slugs(), strategies=STRATEGIES, **kw)


@bp.get("/aliases")
def aliases():
    return _alias_page("admin/aliases/_table.html")


@bp.get("/aliases/<int:alias_id>/edit")
def alias_edit(alias_id: int):
    alias = editable_or_404(Alias, alias_id)
    form = {"scope": str(alias.org_id) if alias.org_id else GLOBAL, "name": alias.name,
            "targets": ", ".join(alias_targets(alias)), "strategy": alias.strategy or ""}
    return _alias_page("admin/aliases/_form.html", form=form)


@bp.post("/aliases")
def alias_save():
    form = request.form.to_dict()
    try:
        alias = write(routing_service.put_alias, form.get("name", ""), parse_scope(form.get("scope")),
                      form.get("targets", ""), form.get("strategy"))
    except AdminError as e:
        return _alias_page("admin/aliases/_form.html", form=form, error=str(e))
    notice = f"Saved alias {alias.name}: it applies from the next request."
    return _alias_page("admin/aliases/_form.html", form={"scope": form.get("scope")}, notice=notice,
                       event="aliases-changed")


@bp.post("/aliases/<int:alias_id>/delete")
def alias_delete(alias_id: int):
    return delete(routing_service.delete_alias, alias_id, "admin.aliases", "aliases-changed")


# ---- Fallback Chains ---------------------------------------------------------------------------

def _fallback_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    rows = [(f, orjson.loads(f.chain)) for f in
            request_session().scalars(select(Fallback).order_by(Fallback.model_slug)).all()]
    rows.sort(key=lambda r: (r[0].model_slug != "*", r[0].model_slug))  # the default chain first
    return reply("admin/fallbacks/index.html", partial, rows=rows, form=form or {}, slugs=_slugs(), **kw)


@bp.get("/fallbacks")
def fallbacks():
    return _fallback_page("admin/fallbacks/_table.html")


@bp.get("/fallbacks/<int:fallback_id>/edit")
def fallback_edit(fallback_id: int):
    require_superadmin()
    fb = request_session().get(Fallback, fallback_id)
    if fb is None:
        abort(404)
    return _fallback_page("admin/fallbacks/_form.html",
                          form={"model": fb.model_slug, "chain": ", ".join(orjson.loads(fb.chain))})


@bp.post("/fallbacks")
def fallback_save():
    form = request.form.to_dict()
    try:
        fb = write(routing_service.put_fallback, form.get("model", ""), form.get("chain", ""))
    except AdminError as e:
        return _fallback_page("admin/fallbacks/_form.html", form=form, error=str(e))
    label = "the default chain" if fb.model_slug == "*" else f"the chain of {fb.model_slug}"
    return _fallback_page("admin/fallbacks/_form.html", notice=f"Saved {label}.", event="fallbacks-changed")


@bp.post("/fallbacks/<int:fallback_id>/delete")
def fallback_delete(fallback_id: int):
    return delete(routing_service.delete_fallback, fallback_id, "admin.fallbacks", "fallbacks-changed")


# ---- Routing Strategy (super-admins only) ------------------------------------------------------

def _strategy_page(form: dict[str, Any] | None = None, **kw: Any):
    return reply("admin/strategy/index.html", "admin/strategy/_form.html",
                 form=form or routing_service.routing_values(request_session()), strategies=STRATEGIES,
                 help=STRATEGY_HELP, fields=routing_service.ROUTING_FIELDS, **kw)


@bp.get("/strategy")
def strategy():
    require_superadmin()
    return _strategy_page()


@bp.post("/strategy")
def strategy_save():
    require_superadmin()
    form = request.form.to_dict()
    try:
        values = write(routing_service.put_routing_settings, form)
    except AdminError as e:
        return _strategy_page(form=form, error=str(e))
    return _strategy_page(form=values, notice=f"Saved: strategy {values['strategy']}, from the next request.",
                          event="routing-changed")


# ---- Provider Load & Routing -------------------------------------------------------------------

def load_rows() -> list[dict[str, Any]]:
    """Every route in force, by provider, with this process's live health for it."""
    rows = []
    for model in MEMO.catalog.models.values():
        for i, route in enumerate(model.routes):
            rows.append({"route": route, "reference": i == 0, "health": HEALTH.describe(route.id)})
    rows.sort(key=lambda r: (r["route"].provider.name, r["route"].model_slug, r["route"].position))
    return rows


@bp.get("/load")
def load():
    return render_page_or_partial("admin/load/index.html", "admin/load/_table.html", rows=load_rows(),
                                  strategy=routing_settings.current().strategy)

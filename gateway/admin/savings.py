"""Savings console: what each mechanism and model saved (from the usage rollups), and the per-org and
per-app savings settings over the config's defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, request
from flask_login import current_user
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, visible_orgs, write
from gateway.admin.logs import visible_org_ids
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.ledger.pricing import usd
from gateway.ledger.rollups import MECHANISMS, models_seen, summarize
from gateway.models import App
from gateway.services import savings as savings_service
from gateway.services.errors import AdminError

DAYS = (1, 7, 30, 90)
REPORT, REPORT_PART = "admin/savings/index.html", "admin/savings/_report.html"
SETTINGS, SETTINGS_PART, LAYER_PART = ("admin/savings/settings.html", "admin/savings/_settings.html",
                                       "admin/savings/_layer.html")
LABELS = {
    "exact_cache": "Exact cache", "semantic_cache": "Semantic cache", "inflight_dedupe": "In-flight dedupe",
    "prompt_cache": "Provider prompt cache", "compression": "Compression", "context_dedupe": "Context dedupe",
    "output_budget": "Output budget", "routing": "Routing",
}
ABOUT = {
    "exact_cache": "Answers a repeated identical request from the cache, without calling a provider.",
    "semantic_cache": "Answers a request close enough in meaning to one already answered.",
    "inflight_dedupe": "Identical requests arriving together share one upstream call.",
    "prompt_cache": "Marks long stable prompt prefixes so the provider bills them at its cached price.",
    "compression": "Trims or summarises long conversations down to a token budget.",
    "context_dedupe": "Removes repeated blocks of context from the prompt.",
    "output_budget": "Sets max tokens on requests that ask for none.",
    "routing": "Fallbacks and cheaper routes priced below the requested model.",
}


def pct(part: int, whole: int) -> float:
    """A bar's width in percent, clamped to [0, 100]."""
    return max(0.0, min(100.0, 100.0 * part / whole)) if whole > 0 else 0.0


def show(value: Any) -> str:
    if value is None:
        return "—"
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


# ---- the report ------------------------------------------------------------------------------------

@bp.get("/savings")
def savings():
    session = request_session()
    allowed = visible_org_ids()
    org_id = request.args.get("org", type=int)
    if allowed is None:  # a super-admin: every org, or the one picked
        org_ids = [org_id] if org_id else None
    else:
        org_id = None
        org_ids = allowed
    days = request.args.get("days", type=int)
    days = days if days in DAYS else 7
    model = (request.args.get("model") or "").strip()
    end = datetime.now(UTC).replace(tzinfo=None)
    start = end - timedelta(days=days)
    summary = summarize(session, org_ids, start, end, model or None)
    top = max([saved for saved, _ in summary.mechanisms.values()] + [0])
    mechanisms = sorted(summary.mechanisms.items(), key=lambda i: (-i[1][0], MECHANISMS.index(i[0])
                                                                   if i[0] in MECHANISMS else 99))
    return render_page_or_partial(
        REPORT, REPORT_PART, summary=summary, mechanisms=mechanisms, top=top, orgs=visible_orgs(session),
        org_id=org_id, days=days, day_choices=DAYS, model=model,
        models=models_seen(session, org_ids, start, end),
        usd=usd, pct=pct, labels=LABELS, about=ABOUT)


# ---- settings ----------------------------------------------------------------------------------------

def _scope(values) -> tuple[int, int | None]:
    """The org (and app) a settings request is about: any org for a super-admin, else the user's own."""
    org_id = values.get("org", type=int)
    if not current_user.is_superadmin:
        if current_user.org_id is None:
            abort(403, description="Your account belongs to no org.")
        if org_id not in (None, current_user.org_id):
            abort(403, description="You can only change your own org's savings settings.")
        org_id = current_user.org_id
    elif org_id is None:
        orgs = visible_orgs(request_session())
        if not orgs:
            abort(404)
        org_id = orgs[0].id
    app_id = values.get("app", type=int)
    if app_id is not None:
        app = request_session().get(App, app_id)
        app_id = app.id if app is not None and app.org_id == org_id else None
    return org_id, app_id


def _context(org_id: int, app_id: int | None) -> dict[str, Any]:
    session = request_session()
    orgs = visible_orgs(session)
    org = next((o for o in orgs if o.id == org_id), None)
    if org is None:
        abort(404)
    apps = session.scalars(select(App).where(App.org_id == org_id).order_by(App.name)).all()
    return {"orgs": orgs, "org": org, "apps": apps, "app": next((a for a in apps if a.id == app_id), None),
            "layers": savings_service.layer_views(session, org_id, app_id, current_user.is_superadmin),
            "labels": LABELS, "about": ABOUT, "show": show, "typed": {}, "errors": {}, "notices": {}}


@bp.get("/savings/settings")
def savings_settings():
    return render_page_or_partial(SETTINGS, SETTINGS_PART, **_context(*_scope(request.args)))


def _layer_reply(org_id: int, app_id: int | None, layer: str, error: str | None = None,
                 notice: str | None = None, typed: dict[str, str] | None = None):
    context = _context(org_id, app_id)
    view = next((v for v in context["layers"] if v.name == layer), None)
    if view is None:
        abort(404)
    context.update(layer=view, typed={layer: typed or {}}, errors={layer: error} if error else {},
                   notices={layer: notice} if notice else {})
    return reply(SETTINGS, LAYER_PART, error=error, event=None if error else "savings-changed", **context)


@bp.post("/savings/settings")
def savings_save():
    org_id, app_id = _scope(request.form)
    form = request.form.to_dict()
    layer = form.get("layer", "")
    try:
        write(savings_service.put_override, org_id, app_id, layer, form)
    except AdminError as e:
        return _layer_reply(org_id, app_id, layer, error=str(e), typed=form)
    return _layer_reply(org_id, app_id, layer, notice="Saved: applies from the next request.")


@bp.post("/savings/settings/reset")
def savings_reset():
    org_id, app_id = _scope(request.form)
    layer = request.form.get("layer", "")
    try:
        write(savings_service.reset_override, org_id, app_id, layer)
    except AdminError as e:
        return _layer_reply(org_id, app_id, layer, error=str(e))
    return _layer_reply(org_id, app_id, layer, notice="Reset: this layer now inherits.")

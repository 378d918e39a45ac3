"""Home: the console's landing page. The last 60 minutes live (from memory, ledger/live.py, polled
every few seconds), cost trends over 7 days (rollups, a uPlot chart), provider load and routing
(route health, as Provider load), the top spenders (party rollups), and for a new install what to
do first: no provider with a usable credential is said plainly, with links to fix it, and a "Try a
request" box sends one chat request through the gateway's own pipeline (home_try.py).

Org-admins see their org only; super-admins every org or the one picked. A member is sent to their
own dashboard.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from flask import current_app, redirect, render_template, request, url_for
from flask_login import current_user

from gateway.admin.blueprint import bp
from gateway.admin.editing import chosen_orgs, require_admin, visible_orgs
from gateway.admin.routing import load_rows
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.ledger.live import LIVE
from gateway.ledger.trends import cost_trends, party_usage
from gateway.memo import MEMO
from gateway.models import utcnow
from gateway.routing.health import CLOSED, HEALTH


def dollars(micros: int | None) -> str:
    """$12.34, or more decimals for small sums ($0.0042); '—' for nothing."""
    if micros is None:
        return "—"
    value = Decimal(micros) / 1_000_000
    if abs(value) >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:.6f}".rstrip("0")


def usable_providers() -> list[Any]:
    """Enabled providers that can answer: a key at hand, or a keyless local kind (Ollama)."""
    return [p for p in MEMO.catalog.providers.values() if p.enabled and (p.api_key or p.kind == "ollama")]


def try_models() -> list[str]:
    """Chat models with a route on a usable provider, for the "Try a request" box."""
    usable = {p.id for p in usable_providers()}
    return sorted(m.slug for m in MEMO.catalog.models.values()
                  if any(r.provider.id in usable for r in m.routes) and "embed" not in m.slug)


def provider_load(org_ids: list[int] | None) -> dict[str, Any]:
    """Share of the last hour's traffic per provider and per route (this process's view, as Provider
    load), with each route's breaker. An org-admin's shares count their own org's requests only."""
    routes = []
    for row in load_rows():
        route, health = row["route"], row["health"]
        if org_ids is None:
            hour = health["last_hour"]
        else:
            parts = [HEALTH.last_hour(route.id, o) for o in org_ids]
            hour = {"requests": sum(p["requests"] for p in parts), "errors": sum(p["errors"] for p in parts)}
        routes.append({"provider": route.provider.name, "model": route.model_slug, "upstream": route.upstream_model,
                       "requests": hour["requests"], "errors": hour["errors"], "state": health["state"]})
    total = sum(r["requests"] for r in routes)
    providers: dict[str, dict[str, Any]] = {}
    for r in routes:
        p = providers.setdefault(r["provider"], {"name": r["provider"], "requests": 0, "errors": 0, "routes": 0,
                                                 "not_closed": 0})
        p["requests"] += r["requests"]
        p["errors"] += r["errors"]
        p["routes"] += 1
        p["not_closed"] += r["state"] != CLOSED
    for item in [*routes, *providers.values()]:
        item["share"] = 100.0 * item["requests"] / total if total else 0.0
    busy = sorted((r for r in routes if r["requests"] or r["state"] != CLOSED),
                  key=lambda r: (-r["requests"], r["provider"], r["model"]))
    return {"total": total, "providers": sorted(providers.values(), key=lambda p: (-p["requests"], p["name"])),
            "routes": busy[:12], "more": max(0, len(busy) - 12)}


def _member_elsewhere():
    """A member's landing: their dashboard (or, in a tree without one, Gateway logs as before Home)."""
    if not current_user.is_superadmin and getattr(current_user, "role", "member") == "member":
        known = current_app.view_functions
        return redirect(url_for("dashboard.home" if "dashboard.home" in known else "admin.logs"))
    return None


@bp.get("/")
def home():
    if (away := _member_elsewhere()) is not None:
        return away
    require_admin()
    org_ids, picked = chosen_orgs(request.args.get("org"))
    session = request_session()
    now = utcnow()
    trends = cost_trends(session, org_ids, now)
    week = now - timedelta(days=7)
    orgs = visible_orgs(session)
    return render_template(
        "admin/home/index.html", live=LIVE.snapshot(org_ids), trends=trends, load=provider_load(org_ids),
        top_users=party_usage(session, org_ids, "user", week, now, limit=5),
        top_apps=party_usage(session, org_ids, "app", week, now, limit=5),
        usable=usable_providers(), models=try_models(), orgs=orgs, picked=picked, dollars=dollars,
        has_ollama="admin.ollama" in current_app.view_functions,
        base_url=request.host_url.rstrip("/") + "/v1", try_form={"org": picked or (orgs[0].id if orgs else "")})


@bp.get("/home/live")
def home_live():
    require_admin()
    org_ids, _ = chosen_orgs(request.args.get("org"))
    return render_page_or_partial("admin/home/_live.html", "admin/home/_live.html", live=LIVE.snapshot(org_ids),
                                  dollars=dollars)

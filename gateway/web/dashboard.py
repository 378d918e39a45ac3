"""The customer dashboard (`/dashboard`): what every signed-in console user has of their own.

Credits of their org (the balance; the credit log for its admins, their own spend for members) and a
top-up request for an operator to approve; their own API keys (bound to them: create with a scope,
revoke, the secret shown once); usage and savings charts from the hourly party rollups (never the
raw ledger); a pricing preview (services/quotes.py, the same computation as POST /v1/account/quote);
their own requests with a drill-down; the savings features the operator lets them opt into.

Sign-in is the console's (flask-login; a one-time password must be changed first), with CSRF on
every POST. Every read is the user's own or their org's; a super-admin, who belongs to no org,
picks an org to look at. Writes go through services/ (people.py, topups.py), which check again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any, TypeVar

import orjson
from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select

from gateway import db
from gateway.db import MAX_ROW_ID
from gateway.errors import GatewayError
from gateway.htmx import is_htmx, private_headers, render_page_or_partial, trigger
from gateway.ledger import rollups
from gateway.ledger.pricing import usd
from gateway.memo import MEMO, Principal
from gateway.models import LedgerEntry, Org, User, utcnow
from gateway.pipeline import gate
from gateway.services import credits as credit_service
from gateway.services import features, people, quotes, tenancy, topups
from gateway.services.errors import AdminError, Forbidden

bp = Blueprint("dashboard", __name__)
csrf = CSRFProtect()  # protect() only: the token and secret are the console's

T = TypeVar("T")
PAGE = "dashboard/index.html"
KEYS, TOPUP, QUOTE, REQUESTS, FEATURES = ("dashboard/_keys.html", "dashboard/_topup.html", "dashboard/_quote.html",
                                          "dashboard/_requests.html", "dashboard/_features.html")
RECENT = 50
CHART_DAYS = 7
PROMPT_MAX = 20_000  # characters in the pricing preview's prompt
MAX_TOKENS_MAX = 1_000_000
SERIES = ("requests", "input_tokens", "output_tokens", "benchmark_micros", "charge_micros", "saved_micros")


@bp.before_request
def _require_login():
    if request.method == "POST":
        csrf.protect()
    if not current_user.is_authenticated:
        return redirect(url_for("admin.login", next=request.path))
    if current_user.must_change_password:
        return redirect(url_for("admin.password"))
    return None


bp.after_request(private_headers)


def _write(fn: Callable[..., T], *args: Any) -> T:
    """One service write as the signed-in user, in its own transaction; Forbidden is a 403."""
    try:
        with db.write_lock, db.session_scope() as session:
            return fn(session, current_user, *args)
    except Forbidden as e:
        abort(403, description=str(e))


def _org() -> Org | None:
    """The user's org; a super-admin's choice (?org=, or the form's org)."""
    session = db.request_session()
    if current_user.is_superadmin:
        org_id = request.values.get("org", type=int)
        return session.get(Org, org_id) if org_id and 0 < org_id <= MAX_ROW_ID else None
    return session.get(Org, current_user.org_id) if current_user.org_id else None


def _me() -> User:
    return db.request_session().get(User, current_user.id)


# ---- what the page shows -------------------------------------------------------------------------

def _usage(org: Org | None) -> dict[str, Any]:
    """Hourly series of the last CHART_DAYS days from party_rollup: the user's own (the org's whole
    for a super-admin looking at an org), with totals."""
    end = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(days=CHART_DAYS)
    series: dict[str, list[int]] = {"t": [], **{n: [] for n in SERIES}}
    if org is not None:
        mine = not current_user.is_superadmin
        for b in rollups.timeseries(db.request_session(), org.id, start, end, "hour", "user" if mine else None):
            group = next((g for g in b["groups"] if not mine or g["key"] == current_user.id), None)
            series["t"].append(int(b["start"].replace(tzinfo=UTC).timestamp()))
            for n in SERIES:
                series[n].append(int(group[n]) if group else 0)
    return {"series": series, "totals": {n: sum(series[n]) for n in SERIES}, "days": CHART_DAYS}


def _features(org: Org | None) -> list[dict[str, Any]]:
    """The savings features the operator lets this org switch itself, each {"layer", "on", "chosen"}."""
    return features.state(org.id) if org is not None else []


def _budgets(org: Org | None) -> list[dict[str, Any]]:
    """The budgets on this user's requests (the org's and their own), with what is left now:
    read from memory, as the gate reads them."""
    if org is None or current_user.is_superadmin:
        return []
    me = Principal(key_id=0, org_id=org.id, org_name=org.name, scope="inference", user_id=current_user.id)
    now = utcnow()
    return [{"on": "your org" if b.entity[0] == "org" else "you", "window": b.window, "hard": b.hard,
             "cap": gate.cap_micros(b, now), "left": gate.remaining_micros(b, now)}
            for b in MEMO.budgets_for(me) if b.entity[0] in ("org", "user")]


def _context(org: Org | None, **kw: Any) -> dict[str, Any]:
    session = db.request_session()
    is_admin = current_user.is_superadmin or current_user.role == "org-admin"
    mine = session.scalars(select(LedgerEntry).where(LedgerEntry.user_id == current_user.id)
                           .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc()).limit(RECENT)).all()
    ctx = {
        "org": org, "is_admin": is_admin, "usd": usd,
        "orgs": session.scalars(select(Org).order_by(Org.name)).all() if current_user.is_superadmin else [],
        "log": credit_service.transactions(session, org.id, limit=30) if org is not None and is_admin else [],
        "topups": topups.listed(session, [org.id], limit=10) if org is not None else [],
        "keys": people.own_keys(session, current_user.id), "scopes": people.own_scopes(current_user),
        "requests": mine, "usage": _usage(org), "features": _features(org), "budgets": _budgets(org),
        "models": sorted(slug for slug, m in MEMO.catalog.models.items() if m.routes),
        "quote": None, "quote_form": {}, "key_form": {"scope": "inference"}, "topup_form": {},
    }
    ctx.update(kw)
    return ctx


def _reply(partial: str, org: Org | None, event: str | None = None, **kw: Any):
    resp = render_page_or_partial(PAGE, partial, **_context(org, **kw))
    if kw.get("error") and not is_htmx():
        resp.status_code = 422
    if event and not kw.get("error"):
        trigger(resp, event)
    return resp


@bp.get("")
def home():
    org = _org()
    return render_template(PAGE, **_context(org))


# ---- my keys -------------------------------------------------------------------------------------

@bp.post("/keys")
def key_create():
    form = {k: v[:200] for k, v in request.form.to_dict().items()}
    org = _org()
    try:
        new = _write(people.create_own_key, current_user.id, form.get("name", ""), form.get("scope", ""))
    except AdminError as e:
        return _reply(KEYS, org, key_form=form, key_error=str(e))
    return _reply(KEYS, org, event="my-keys-changed", created=new.key, secret=new.secret)


@bp.post("/keys/<int:key_id>/revoke")
def key_revoke(key_id: int):
    try:
        _write(people.revoke_own_key, current_user.id, key_id)
    except AdminError:
        abort(404)
    if not is_htmx():
        return redirect(url_for("dashboard.home"))
    return _reply(KEYS, _org(), event="my-keys-changed")


# ---- top-up request ------------------------------------------------------------------------------

@bp.post("/topup")
def topup():
    form = {k: v[:600] for k, v in request.form.to_dict().items()}
    org = _org()
    if org is None:
        abort(404)
    try:
        micros = tenancy.parse_usd(form.get("amount"))
        row = _write(topups.request_topup, org, micros, form.get("note", ""), _me())
    except AdminError as e:
        message = str(e)
        return _reply(TOPUP, org, topup_form=form, topup_error=message[:1].upper() + message[1:])
    return _reply(TOPUP, org, topup_notice=f"Asked for ${usd(row.amount_micros)} (request #{row.id}); an operator "
                                           "will approve it, and the credits apply from the next request.")


# ---- feature opt-ins ------------------------------------------------------------------------------

@bp.post("/features")
def feature_switch():
    """Switch one offered savings feature on or off for the org (its admins: services/features.py
    refuses a member with Forbidden, a layer not offered with a message)."""
    org = _org()
    if org is None:
        abort(404)
    layer = (request.form.get("layer") or "")[:64]
    on = request.form.get("on") == "1"
    try:
        features.set_opt_in(current_user, org.id, layer, on)
    except Forbidden as e:
        abort(403, description=str(e))
    except AdminError as e:
        return _reply(FEATURES, org, feature_error=str(e))
    return _reply(FEATURES, org, feature_notice=f"{layer}: {'on' if on else 'off'} for {org.name}'s requests.")


# ---- pricing preview -----------------------------------------------------------------------------

def _quote_body(form: dict[str, str]) -> dict[str, Any]:
    model = (form.get("model") or "").strip()
    if not model:
        raise AdminError("Choose a model.")
    prompt = form.get("prompt") or ""
    if len(prompt) > PROMPT_MAX:
        raise AdminError(f"The prompt has at most {PROMPT_MAX:,} characters here.")
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    raw = (form.get("max_tokens") or "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOKENS_MAX:
            raise AdminError(f"Max output tokens is a whole number from 1 to {MAX_TOKENS_MAX:,}.")
        body["max_tokens"] = int(raw)
    return body


@bp.post("/quote")
def quote():
    form = {k: v[:PROMPT_MAX + 1] for k, v in request.form.to_dict().items()}
    org = _org()
    if org is None:
        return _reply(QUOTE, org, quote_form=form, quote_error="Choose an org first.")
    principal = Principal(key_id=0, org_id=org.id, org_name=org.name, scope="inference", key_name="dashboard",
                          user_id=None if current_user.is_superadmin else current_user.id)
    try:
        result = quotes.quote(principal, _quote_body(form), {})
    except (AdminError, GatewayError) as e:
        return _reply(QUOTE, org, quote_form=form, quote_error=str(e))
    return _reply(QUOTE, org, quote_form=form, quote=result)


# ---- my requests ---------------------------------------------------------------------------------

@bp.get("/requests")
def requests_table():
    return _reply(REQUESTS, _org())


@bp.get("/requests/<request_id>")
def request_detail(request_id: str):
    row = db.request_session().scalar(select(LedgerEntry).where(LedgerEntry.request_id == request_id[:64]))
    if row is None or row.user_id != current_user.id:  # another user's request does not exist for you
        abort(404)
    saved_by = dict(part.split("=", 1) for part in row.saved_by.split(",") if "=" in part)
    return render_template("dashboard/request.html", row=row, usd=usd, saved_by=saved_by)


def chart_json(usage: dict[str, Any]) -> str:
    return orjson.dumps(usage["series"]).decode()


def init_app(app: Flask) -> None:
    app.register_blueprint(bp, url_prefix="/dashboard")
    app.jinja_env.filters.setdefault("chart_json", chart_json)

"""Reconciliation: our ledger against each provider's own usage and cost, per provider, model and day.

`reconcile(day)` compares, for every provider of kind openai, anthropic or openrouter, what our ledger
says went to it on that UTC day (requests that reached it, `cache` miss, not on an org's own BYOK key;
tokens in and out; USD at the route's prices, which is what the operator owes) with what the provider
reports (usage_reports.py). Their model names may carry a snapshot suffix (`gpt-4o-mini-2024-07-18`
for our `gpt-4o-mini`); both are put on our name. Each line's drift is the largest relative
difference of the figures both sides report; a line over the threshold (`reconciliation:
drift_threshold_percent`, default 2) is flagged. A run replaces that day's lines for each provider.

Run daily by the scheduler (jobs.py, for yesterday) and by `gateway reconcile --day YYYY-MM-DD`.
A provider without an admin key, or whose report fails, gets lines with its side empty and a note;
the others still run. Reads the ledger through its created_at index, off the request path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.ledger import pricing
from gateway.memo import MEMO, RouteInfo
from gateway.models import GatewaySetting, LedgerEntry, Provider, ReconciliationLine, Route
from gateway.services import usage_reports
from gateway.services.usage_reports import Figures, ReportError
from gateway.settings import environ_value
from gateway.wire.canonical import Usage

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_PERCENT = 2.0
KINDS = ("openai", "anthropic", "openrouter")
MAX_OPENROUTER_LOOKUPS = 5000  # generation lookups per provider and day


@dataclass
class Ours:
    requests: int = 0
    tokens: int = 0
    cost_micros: int = 0
    ids: list[str] | None = None


def threshold_percent(session: Session) -> float:
    value = session.scalar(select(GatewaySetting.value).where(GatewaySetting.key == "reconciliation")) or {}
    raw = value.get("drift_threshold_percent", DEFAULT_THRESHOLD_PERCENT) if isinstance(value, dict) else None
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0 \
        else DEFAULT_THRESHOLD_PERCENT


def admin_key(provider: Provider, secret_key: str) -> str | None:
    from gateway import crypto

    if provider.admin_api_key_enc:
        try:
            return crypto.decrypt(crypto.derive_key(secret_key), provider.admin_api_key_enc,
                                  aad=b"admin:" + provider.name.encode())
        except Exception:
            log.error("provider %s: admin key cannot be decrypted with this secret key", provider.name)
            return None
    return environ_value(provider.admin_api_key_env) if provider.admin_api_key_env else None


def ours(session: Session, provider: Provider, day: date) -> dict[str, Ours]:
    start = datetime(day.year, day.month, day.day)
    rows = session.execute(
        select(LedgerEntry.upstream_model, func.count(), func.sum(LedgerEntry.input_tokens),
               func.sum(LedgerEntry.output_tokens), func.sum(LedgerEntry.cached_tokens),
               func.sum(LedgerEntry.cache_write_tokens))
        .where(LedgerEntry.created_at >= start, LedgerEntry.created_at < start + timedelta(days=1),
               LedgerEntry.provider == provider.name, LedgerEntry.cache == "miss",
               LedgerEntry.byok.is_(False), LedgerEntry.input_tokens + LedgerEntry.output_tokens > 0)
        .group_by(LedgerEntry.upstream_model)).all()
    routes = _routes(session, provider)
    out: dict[str, Ours] = {}
    for model, n, inp, outp, cached, written in rows:
        usage = Usage(int(inp or 0), int(outp or 0), int(cached or 0), int(written or 0))
        out[model] = Ours(n, usage.input_tokens + usage.output_tokens, pricing.cost_micros(routes.get(model), usage))
    if provider.kind == "openrouter":
        for model, gid in session.execute(
                select(LedgerEntry.upstream_model, LedgerEntry.upstream_id)
                .where(LedgerEntry.created_at >= start, LedgerEntry.created_at < start + timedelta(days=1),
                       LedgerEntry.provider == provider.name, LedgerEntry.cache == "miss",
                       LedgerEntry.byok.is_(False), LedgerEntry.upstream_id.is_not(None))
                .limit(MAX_OPENROUTER_LOOKUPS)).all():
            entry = out.setdefault(model, Ours())
            entry.ids = [*(entry.ids or ()), gid]
    return out


def _routes(session: Session, provider: Provider) -> dict[str, RouteInfo]:
    info = MEMO._provider_info(provider)
    out: dict[str, RouteInfo] = {}
    for r in session.scalars(select(Route).where(Route.provider_id == provider.id).order_by(Route.position)):
        out.setdefault(r.upstream_model, RouteInfo(
            r.id, "", info, r.upstream_model, r.input_micros_per_mtok, r.output_micros_per_mtok,
            r.cached_input_micros_per_mtok, r.context_window, r.position))
    return out


def theirs(provider: Provider, secret_key: str, day: date, our: dict[str, Ours]) -> dict[str, Figures]:
    """Raises ReportError (the note for the report) when the provider cannot be asked or answered badly."""
    base = provider.base_url.rstrip("/")
    if provider.kind == "openrouter":
        info = MEMO._provider_info(provider)
        key = admin_key(provider, secret_key)
        if key:
            from dataclasses import replace

            info = replace(info, api_key=key)
        route = RouteInfo(0, "", info, "", 0, 0, None, None, 0)
        return usage_reports.openrouter(route, {m: o.ids for m, o in our.items() if o.ids})
    key = admin_key(provider, secret_key)
    if not key:
        raise ReportError("no admin key configured (admin_api_key or admin_api_key_env)")
    fetch = usage_reports.openai if provider.kind == "openai" else usage_reports.anthropic
    return fetch(base, key, day)


def _our_name(model: str, names: list[str]) -> str:
    """Their model name on ours: equal, or ours plus a snapshot suffix (the longest such name)."""
    if model in names:
        return model
    matches = [n for n in names if n and model.startswith(n + "-")]
    return max(matches, key=len) if matches else model


def drift(pairs: list[tuple[int, int | None]]) -> float:
    worst = 0.0
    for mine, other in pairs:
        if other is None:
            continue
        top = max(abs(mine), abs(other))
        if top:
            worst = max(worst, abs(mine - other) / top)
    return worst


def reconcile(session: Session, day: date, secret_key: str, providers: list[str] | None = None) -> list[ReconciliationLine]:
    """Compare and store `day` for every reconcilable provider (or those named); returns the lines."""
    limit = threshold_percent(session) / 100
    lines: list[ReconciliationLine] = []
    q = select(Provider).where(Provider.kind.in_(KINDS)).order_by(Provider.name)
    if providers:
        q = q.where(Provider.name.in_(providers))
    for provider in session.scalars(q).all():
        our = ours(session, provider, day)
        note = ""
        try:
            their = theirs(provider, secret_key, day, our)
        except ReportError as e:
            log.warning("reconciliation %s %s: %s", provider.name, day, e)
            their, note = None, str(e)[:255]
        merged: dict[str, Figures] = {}
        for model, figures in (their or {}).items():
            name = _our_name(model, list(our))
            if name in merged:
                _add(merged[name], figures)
            else:
                merged[name] = Figures(figures.requests, figures.tokens, figures.cost_micros)
        session.execute(delete(ReconciliationLine).where(ReconciliationLine.day == day,
                                                         ReconciliationLine.provider == provider.name))
        for model in sorted(set(our) | set(merged)):
            mine, other = our.get(model, Ours()), merged.get(model)
            if their is None:
                other_req = other_tok = other_cost = None
            else:
                other = other or Figures(requests=0 if provider.kind != "anthropic" else None,
                                         tokens=0 if provider.kind != "openrouter" else None)
                other_req, other_tok, other_cost = other.requests, other.tokens, other.cost_micros
            d = drift([(mine.requests, other_req), (mine.tokens, other_tok), (mine.cost_micros, other_cost)])
            line = ReconciliationLine(day=day, provider=provider.name, model=model[:160], our_requests=mine.requests,
                                      their_requests=other_req, our_tokens=mine.tokens, their_tokens=other_tok,
                                      our_cost_micros=mine.cost_micros, their_cost_micros=other_cost,
                                      drift=round(d, 6), flagged=their is not None and d > limit, note=note)
            session.add(line)
            lines.append(line)
    session.flush()
    return lines


def _add(into: Figures, figures: Figures) -> None:
    """Sum a provider model's figures into the line of our name (several snapshots may map to one)."""
    for name in ("requests", "tokens", "cost_micros"):
        a, b = getattr(into, name), getattr(figures, name)
        setattr(into, name, None if a is None and b is None else (a or 0) + (b or 0))

"""Usage rollups: hourly sums per (org, hour, requested model, mechanism) in `usage_rollup`, and the
usage summaries read from them (GET /v1/usage/summary, the console's savings report and org overview);
hourly sums per org and key, user, app or provider in `party_rollup` (and per day in
`party_day_rollup`), and the timeseries over both (GET /v1/usage/timeseries).

The ledger writer adds each batch's sums in the same transaction as its rows (`rollup` then
`upsert_rollups`: INSERT ... ON CONFLICT DO UPDATE, so concurrent writers on PostgreSQL add rather
than overwrite). Mechanism "" holds the totals; any other mechanism holds what it saved and on how
many requests. Readers never scan the raw ledger: each summary is one aggregate over an indexed hour
range, so the resolution is one hour and a window is widened to whole hours (`window`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from gateway.models import DlpRollup, PartyDayRollup, PartyRollup, UsageRollup

# What the meter attributes savings to (gateway/pipeline/meter.py); output_budget saves no tokens
# the benchmark would have counted, so it never appears here.
MECHANISMS = ("exact_cache", "semantic_cache", "inflight_dedupe", "prompt_cache", "compression",
              "context_dedupe", "routing", "batch", "batch_arbitrage")
# Rollup rows that are notes, not savings: kept beside the mechanisms, never summed with them.
# prompt_cache_unread_writes: writes the gateway caused that nothing read within the cache's
# lifetime (requests = writes, input_tokens = tokens written, saved_micros = minus their premium,
# which prompt_cache's saving already counted on the rows that wrote them).
UNREAD_WRITES = "prompt_cache_unread_writes"
NOTES = (UNREAD_WRITES,)
SUMS = ("requests", "errors", "input_tokens", "output_tokens", "benchmark_micros", "charge_micros",
        "saved_micros")
HOUR = timedelta(hours=1)


# ---- writing: the ledger writer's batches -----------------------------------------------------------

def groups(rows: list[dict]) -> dict[tuple, list[int]]:
    """A batch's rows summed per (org, hour, requested model, key, user, app, provider), SUMS in
    order: `rollup` and `party_rollup` both read these, so a batch is walked once, not once each
    (most of a batch shares a handful of such groups)."""
    acc: dict[tuple, list[int]] = {}
    for row in rows:
        key = (row["org_id"], row["created_at"].replace(minute=0, second=0, microsecond=0), row["requested_model"],
               row.get("key_id"), row.get("user_id"), row.get("app_id"), row.get("provider") or "")
        s = acc.get(key)
        if s is None:
            s = acc[key] = [0, 0, 0, 0, 0, 0, 0]
        s[0] += 1
        if row["status"] >= 400:
            s[1] += 1
        s[2] += row["input_tokens"]
        s[3] += row["output_tokens"]
        s[4] += row["benchmark_micros"]
        s[5] += row["charge_micros"]
        s[6] += row["saved_micros"]
    return acc


def rollup(rows: list[dict], grouped: dict[tuple, list[int]] | None = None) -> list[dict]:
    """Hourly sums per (org, hour, requested model, mechanism); mechanism "" is the total."""
    acc: dict[tuple, list[int]] = {}
    for key, sums in (groups(rows) if grouped is None else grouped).items():
        total = acc.get(key[:3])
        if total is None:
            acc[key[:3]] = list(sums)
        else:
            for i, v in enumerate(sums):
                total[i] += v
    out = [{"org_id": k[0], "hour": k[1], "model": k[2], "mechanism": "", **dict(zip(SUMS, v, strict=True))}
           for k, v in acc.items()]
    parts: dict[tuple, dict] = {}
    for row in rows:
        mechanisms, unread = row.get("saved_mechanisms"), row.get("unread_writes")
        if not mechanisms and not unread:
            continue
        base = (row["org_id"], row["created_at"].replace(minute=0, second=0, microsecond=0), row["requested_model"])
        for mechanism, micros in (mechanisms or {}).items():
            part = parts.setdefault((*base, mechanism), dict.fromkeys(SUMS, 0))
            part["requests"] += 1
            part["saved_micros"] += micros
        if unread:  # (writes, tokens, premium micros), reported once
            note = parts.setdefault((*base, UNREAD_WRITES), dict.fromkeys(SUMS, 0))
            note["requests"] += unread[0]
            note["input_tokens"] += unread[1]
            note["saved_micros"] -= unread[2]
    return out + [{"org_id": k[0], "hour": k[1], "model": k[2], "mechanism": k[3], **v} for k, v in parts.items()]


def upsert_rollups(session, rows: list[dict]) -> None:
    """Add to the hour's sums (INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL)."""
    session.execute(_adding(session, UsageRollup, ("org_id", "hour", "model", "mechanism")), rows)


_ADDING: dict[tuple, Any] = {}


def _adding(session, table, keys: tuple[str, ...]):
    """INSERT ... ON CONFLICT (keys) DO UPDATE adding every sum: built once per table and dialect
    (building it is most of a small batch's work)."""
    dialect = session.bind.dialect.name
    stmt = _ADDING.get((table, dialect))
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(table)
        stmt = _ADDING[(table, dialect)] = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: getattr(table, name) + getattr(stmt.excluded, name) for name in SUMS},
        )
    return stmt


def upsert_dlp_rollups(session, events: list[dict]) -> None:
    """Daily sums per (org, day, rule, action) of data-protection activity (`dlp_rollup`), added in
    the writer's transaction like the usage sums."""
    acc: dict[tuple, list[int]] = {}
    for row in events:
        day = row["created_at"].replace(hour=0, minute=0, second=0, microsecond=0)
        sums = acc.setdefault((row["org_id"], day, row["rule"], row["action"]), [0, 0])
        sums[0] += 1
        sums[1] += row["matches"]
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(DlpRollup)
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "day", "rule", "action"],
        set_={"requests": DlpRollup.requests + stmt.excluded.requests,
              "matches": DlpRollup.matches + stmt.excluded.matches},
    )
    session.execute(stmt, [{"org_id": k[0], "day": k[1], "rule": k[2], "action": k[3], "requests": v[0],
                            "matches": v[1]} for k, v in acc.items()])


# ---- reading: summaries -------------------------------------------------------------------------------

@dataclass
class ModelLine:
    model: str
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUMS, 0))
    saved_by: dict[str, int] = field(default_factory=dict)  # mechanism -> micros


@dataclass
class Summary:
    start: datetime  # naive UTC, on the hour (rollups are hourly)
    end: datetime  # exclusive
    totals: dict[str, int]
    mechanisms: dict[str, tuple[int, int]]  # mechanism -> (saved micros, requests it saved on)
    models: list[ModelLine]
    notes: dict[str, dict[str, int]] = field(default_factory=dict)  # NOTES -> their sums

    @property
    def saved_percent(self) -> float:
        bench = self.totals["benchmark_micros"]
        return 100.0 * self.totals["saved_micros"] / bench if bench else 0.0


def window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The hour-aligned range covering [start, end): start floored, end rounded up to the hour."""
    lo = start.replace(minute=0, second=0, microsecond=0)
    hi = end.replace(minute=0, second=0, microsecond=0)
    return lo, (hi if hi == end else hi + HOUR)


def summarize(session: Session, org_ids: Iterable[int] | None, start: datetime, end: datetime,
              model: str | None = None) -> Summary:
    """Totals, savings by mechanism and by requested model for `org_ids` (None: every org) over
    the hours in [start, end). Bounded: one aggregate over the (org_id, hour, ...) unique index, or
    the hour index for every org; the result has one row per (model, mechanism)."""
    lo, hi = window(start, end)
    R = UsageRollup
    q = (select(R.model, R.mechanism, *(func.coalesce(func.sum(getattr(R, s)), 0) for s in SUMS))
         .where(R.hour >= lo, R.hour < hi).group_by(R.model, R.mechanism))
    if org_ids is not None:
        q = q.where(R.org_id.in_(list(org_ids)))
    if model:
        q = q.where(R.model == model)
    totals = dict.fromkeys(SUMS, 0)
    mechanisms: dict[str, list[int]] = {m: [0, 0] for m in MECHANISMS}
    lines: dict[str, ModelLine] = {}
    notes: dict[str, dict[str, int]] = {}
    for row in session.execute(q).all():
        name, mechanism, sums = row[0], row[1], dict(zip(SUMS, (int(v) for v in row[2:]), strict=True))
        if mechanism in NOTES:
            note = notes.setdefault(mechanism, dict.fromkeys(SUMS, 0))
            for key, value in sums.items():
                note[key] += value
            continue
        line = lines.setdefault(name, ModelLine(name))
        if mechanism == "":
            for key, value in sums.items():
                totals[key] += value
                line.totals[key] += value
        elif sums["saved_micros"] or sums["requests"]:
            acc = mechanisms.setdefault(mechanism, [0, 0])
            acc[0] += sums["saved_micros"]
            acc[1] += sums["requests"]
            line.saved_by[mechanism] = line.saved_by.get(mechanism, 0) + sums["saved_micros"]
    models = sorted(lines.values(), key=lambda m: (-m.totals["benchmark_micros"], m.model))
    return Summary(lo, hi, totals, {m: (v[0], v[1]) for m, v in mechanisms.items()}, models, notes)


def models_seen(session: Session, org_ids: Iterable[int] | None, start: datetime, end: datetime) -> list[str]:
    """The requested models with rollups in the window (for a filter's choices)."""
    lo, hi = window(start, end)
    q = select(UsageRollup.model).where(UsageRollup.hour >= lo, UsageRollup.hour < hi,
                                        UsageRollup.mechanism == "").distinct().order_by(UsageRollup.model)
    if org_ids is not None:
        q = q.where(UsageRollup.org_id.in_(list(org_ids)))
    return list(session.scalars(q).all())


def recent_spend(session: Session, org_ids: Iterable[int], now: datetime) -> dict[int, tuple[int, int]]:
    """org id -> micros charged over the hourly rollups covering the last 24 h and the last 7 days
    (orgs with none are absent): one aggregate over at most 7 x 24 hours per org and model."""
    day = (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    week = (now - timedelta(days=7)).replace(minute=0, second=0, microsecond=0)
    R = UsageRollup
    return {org_id: (int(d), int(w)) for org_id, d, w in session.execute(
        select(R.org_id, func.coalesce(func.sum(case((R.hour >= day, R.charge_micros), else_=0)), 0),
               func.coalesce(func.sum(R.charge_micros), 0))
        .where(R.org_id.in_(list(org_ids)), R.hour >= week, R.mechanism == "").group_by(R.org_id)).tuples().all()}


# ---- by who called: party_rollup (keys, users, apps) and the timeseries ------------------------------

PARTIES = {"key": "key_id", "user": "user_id", "app": "app_id"}
# Also kept per provider (party "provider", party_id the provider's id), for the console's cost
# trends by provider; not a group_by of the API's timeseries.
PROVIDER = "provider"


def party_rollup(rows: list[dict], provider_ids: Mapping[str, int] | None = None,
                 grouped: dict[tuple, list[int]] | None = None) -> list[dict]:
    """Hourly sums per (org, hour, party, party id); `provider_ids` (provider name -> id) adds the
    serving provider as a party (rows served by no provider, or an unknown one, are not counted there)."""
    acc: dict[tuple, list[int]] = {}
    for (org_id, hour, _model, key_id, user_id, app_id, provider), sums in (
            groups(rows) if grouped is None else grouped).items():
        parties = [("key", key_id), ("user", user_id), ("app", app_id)]
        if provider_ids and provider:
            parties.append((PROVIDER, provider_ids.get(provider)))
        for party, party_id in parties:
            if party_id is None:
                continue
            s = acc.get((org_id, hour, party, party_id))
            if s is None:
                acc[(org_id, hour, party, party_id)] = list(sums)
            else:
                for i, v in enumerate(sums):
                    s[i] += v
    return [{"org_id": k[0], "hour": k[1], "party": k[2], "party_id": k[3], **dict(zip(SUMS, v, strict=True))}
            for k, v in acc.items()]


def by_day(party_rows: list[dict]) -> list[dict]:
    """The hourly party sums of a batch, summed per UTC day (for `party_day_rollup`)."""
    acc: dict[tuple, dict] = {}
    for row in party_rows:
        key = (row["org_id"], row["hour"].replace(hour=0), row["party"], row["party_id"])
        s = acc.setdefault(key, dict.fromkeys(SUMS, 0))
        for name in SUMS:
            s[name] += row[name]
    return [{"org_id": k[0], "day": k[1], "party": k[2], "party_id": k[3], **v} for k, v in acc.items()]


def upsert_party_rollups(session: Session, rows: list[dict]) -> None:
    """Add a batch's party sums to the hourly rollups and to the daily ones."""
    if not rows:
        return
    session.execute(_adding(session, PartyRollup, ("org_id", "hour", "party", "party_id")), rows)
    session.execute(_adding(session, PartyDayRollup, ("org_id", "party", "day", "party_id")), by_day(rows))


def bucket_start(hour: datetime, bucket: str) -> datetime:
    return hour.replace(hour=0) if bucket == "day" else hour


def timeseries(session: Session, org_id: int, start: datetime, end: datetime, bucket: str,
               group_by: str | None) -> list[dict[str, Any]]:
    """Buckets from `start` (floored to the bucket) to `end`, each with its groups' sums (one group,
    key None, without `group_by`). Every bucket is listed, empty ones too."""
    if group_by in PARTIES:
        table, key = PartyRollup, PartyRollup.party_id
        where = [PartyRollup.party == group_by]
    else:
        table = UsageRollup
        key = UsageRollup.mechanism if group_by == "mechanism" else UsageRollup.model
        where = ([UsageRollup.mechanism != "", UsageRollup.mechanism.notin_(NOTES)] if group_by == "mechanism"
                 else [UsageRollup.mechanism == ""])
    first = bucket_start(start.replace(minute=0, second=0, microsecond=0), bucket)
    q = (select(table.hour, key if group_by else func.min(table.org_id), *[func.sum(getattr(table, n)) for n in SUMS])
         .where(table.org_id == org_id, table.hour >= first, table.hour < end, *where)
         .group_by(table.hour, *([key] if group_by else [])))
    sums: dict[datetime, dict[Any, list[int]]] = defaultdict(dict)
    for hour, group, *values in session.execute(q):
        slot = sums[bucket_start(hour, bucket)].setdefault(group if group_by else None, [0] * len(SUMS))
        for i, v in enumerate(values):
            slot[i] += int(v or 0)
    step = timedelta(days=1) if bucket == "day" else timedelta(hours=1)
    out, at = [], first
    while at < end:
        groups = sums.get(at, {})
        out.append({"start": at, "end": at + step,
                    "groups": [{"key": g, **dict(zip(SUMS, v, strict=True))}
                               for g, v in sorted(groups.items(), key=lambda item: str(item[0]))]})
        at += step
    return out

"""The console's reads over the rollup tables: cost trends per day (by model and by provider), the
top spenders, per-user usage and error-report groups. Never the raw ledger.

Each read is one aggregate over an index whose leading columns are the org (or, for every org,
the party / hour) and the hour, for the window asked; rows come back per hour and are summed per
day here, so SQL stays the same on SQLite and PostgreSQL. The resolution is the rollups' hour.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.ledger.rollups import BATCH_SPEND, PROVIDER, SUMS, window
from gateway.models import App, ErrorReport, Org, PartyDayRollup, PartyRollup, Provider, UsageRollup, User

MONEY = ("benchmark_micros", "charge_micros", "saved_micros")


def day_of(hour: datetime) -> datetime:
    return hour.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Trends:
    days: list[datetime]
    totals: dict[str, list[int]]  # money field -> one value per day
    by_model: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # model -> field -> per day
    by_provider: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    batch: dict[str, list[int]] = field(default_factory=dict)  # batch rows' own: money field -> per day

    def as_json(self) -> dict[str, Any]:
        return {"days": [calendar.timegm(d.timetuple()) for d in self.days], "totals": self.totals,
                "by_model": self.by_model, "by_provider": self.by_provider, "batch": self.batch}

    def sums(self, group: dict[str, dict[str, list[int]]]) -> list[tuple[str, dict[str, int]]]:
        """(name, field -> sum over the days), the biggest benchmark first."""
        rows = [(name, {f: sum(v) for f, v in fields.items()}) for name, fields in group.items()]
        return sorted(rows, key=lambda r: (-r[1]["benchmark_micros"], r[0]))


def _empty(n: int) -> dict[str, list[int]]:
    return {f: [0] * n for f in MONEY}


def cost_trends(session: Session, org_ids: Iterable[int] | None, now: datetime, days: int = 7) -> Trends:
    """Benchmark, charge and saved per UTC day over the last `days` days (today included), in total,
    per requested model (usage_rollup), per serving provider (party_day_rollup), and of the batch
    rows alone (their `batch_spend` note: batch and arbitrage spend and what they saved)."""
    first = day_of(now) - timedelta(days=days - 1)
    end = day_of(now) + timedelta(days=1)
    day_list = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    orgs = None if org_ids is None else list(org_ids)
    out = Trends(day_list, _empty(days), batch=_empty(days))
    U = UsageRollup
    q = (select(U.hour, U.model, U.mechanism, *(func.sum(getattr(U, f)) for f in MONEY))
         .where(U.hour >= first, U.hour < end, U.mechanism.in_(("", BATCH_SPEND)))
         .group_by(U.hour, U.model, U.mechanism))
    if orgs is not None:
        q = q.where(U.org_id.in_(orgs))
    for hour, model, mechanism, *values in session.execute(q):
        i = index[day_of(hour)]
        if mechanism == BATCH_SPEND:  # already in the totals: shown beside them
            for f, v in zip(MONEY, values, strict=True):
                out.batch[f][i] += int(v or 0)
            continue
        line = out.by_model.setdefault(model or "(none)", _empty(days))
        for f, v in zip(MONEY, values, strict=True):
            out.totals[f][i] += int(v or 0)
            line[f][i] += int(v or 0)
    D = PartyDayRollup
    q = (select(D.day, D.party_id, *(func.sum(getattr(D, f)) for f in MONEY))
         .where(D.party == PROVIDER, D.day >= first, D.day < end).group_by(D.day, D.party_id))
    if orgs is not None:
        q = q.where(D.org_id.in_(orgs))
    names = dict(session.execute(select(Provider.id, Provider.name)).tuples().all())
    for day, provider_id, *values in session.execute(q):
        line = out.by_provider.setdefault(names.get(provider_id, f"provider {provider_id}"), _empty(days))
        for f, v in zip(MONEY, values, strict=True):
            line[f][index[day_of(day)]] += int(v or 0)
    return out


@dataclass
class PartyLine:
    party_id: int
    name: str
    org: str
    sums: dict[str, int]


def party_usage(session: Session, org_ids: Iterable[int] | None, party: str, start: datetime, end: datetime,
                limit: int | None = None) -> list[PartyLine]:
    """Sums per user (or app, key) over the hours of [start, end), the biggest charge first; names
    resolved for the rows shown only. Whole days are read from the daily rollups, the hours at
    either end from the hourly ones (a month: 30 rows per user, not 720)."""
    lo, hi = window(start, end)
    first_day = day_of(lo) if lo == day_of(lo) else day_of(lo) + timedelta(days=1)
    last_day = day_of(hi)
    orgs = None if org_ids is None else list(org_ids)
    acc: dict[int, list[int]] = {}
    spans: list[tuple[Any, Any, datetime, datetime]] = []
    if first_day < last_day:
        spans = [(PartyRollup, PartyRollup.hour, lo, first_day),
                 (PartyDayRollup, PartyDayRollup.day, first_day, last_day),
                 (PartyRollup, PartyRollup.hour, last_day, hi)]
    else:
        spans = [(PartyRollup, PartyRollup.hour, lo, hi)]
    for table, when, a, b in spans:
        if a >= b:
            continue
        q = (select(table.party_id, func.min(table.org_id), *(func.sum(getattr(table, s)) for s in SUMS))
             .where(table.party == party, when >= a, when < b).group_by(table.party_id))
        if orgs is not None:
            q = q.where(table.org_id.in_(orgs))
        for party_id, org_id, *values in session.execute(q):
            line = acc.setdefault(party_id, [org_id] + [0] * len(SUMS))
            for i, v in enumerate(values, start=1):
                line[i] += int(v or 0)
    charge = 1 + SUMS.index("charge_micros")
    ranked = sorted(acc.items(), key=lambda item: (-item[1][charge], item[0]))[:limit]
    ids = [party_id for party_id, _ in ranked]
    if party == "user":
        names = dict(session.execute(select(User.id, User.email).where(User.id.in_(ids))).tuples().all())
    elif party == "app":
        names = dict(session.execute(select(App.id, App.name).where(App.id.in_(ids))).tuples().all())
    else:
        names = {}
    org_names = dict(session.execute(select(Org.id, Org.name)).tuples().all())
    return [PartyLine(party_id, names.get(party_id, f"{party} {party_id}"), org_names.get(line[0], ""),
                      dict(zip(SUMS, line[1:], strict=True))) for party_id, line in ranked]


@dataclass
class ErrorGroups:
    buckets: list[datetime]
    hourly: bool
    groups: list[dict[str, Any]]  # {"type", "model", "count", "series": [per bucket]}
    total: int


def error_groups(session: Session, org_ids: Iterable[int] | None, start: datetime, end: datetime,
                 source: str = "") -> ErrorGroups:
    """Error reports in [start, end) grouped by type and model, with counts per hour (a window of up
    to two days) or per day. One aggregate over the (org, created_at) or created_at index."""
    hourly = end - start <= timedelta(days=2)
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    first = start.replace(minute=0, second=0, microsecond=0) if hourly else day_of(start)
    buckets = []
    at = first
    while at < end:
        buckets.append(at)
        at += step
    E = ErrorReport
    bucket = _bucket(session, E.created_at, hourly)
    q = (select(E.type, E.model, bucket, func.count()).where(E.created_at >= start, E.created_at < end)
         .group_by(E.type, E.model, bucket))
    if org_ids is not None:
        q = q.where(E.org_id.in_(list(org_ids)))
    if source:
        q = q.where(E.source == source)
    index = {b: i for i, b in enumerate(buckets)}
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(buckets))
    for type_, model, when, count in session.execute(q):
        when = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
        i = index.get(when)
        if i is not None:
            acc[(type_, model)][i] += int(count)
    groups = [{"type": t, "model": m, "count": sum(s), "series": s} for (t, m), s in acc.items()]
    groups.sort(key=lambda g: (-g["count"], g["type"], g["model"]))
    return ErrorGroups(buckets, hourly, groups, sum(g["count"] for g in groups))


def _bucket(session: Session, column, hourly: bool):
    if session.bind.dialect.name == "postgresql":
        return func.date_trunc("hour" if hourly else "day", column)
    return func.strftime("%Y-%m-%d %H:00:00" if hourly else "%Y-%m-%d 00:00:00", column)

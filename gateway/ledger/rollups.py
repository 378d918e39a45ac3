"""Rollups by who called: hourly sums per org and key, user or app, and the timeseries read over
the rollup tables (usage_rollup for totals, models and mechanisms; party_rollup for keys, users
and apps). The writer adds a batch's sums in the same transaction as its rows; views never read
the raw ledger."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.models import PartyRollup, UsageRollup

SUMS = ("requests", "errors", "input_tokens", "output_tokens", "benchmark_micros", "charge_micros",
        "saved_micros")
PARTIES = {"key": "key_id", "user": "user_id", "app": "app_id"}
GROUPS = ("model", "key", "user", "app", "mechanism")


def party_rollup(rows: list[dict]) -> list[dict]:
    acc: dict[tuple, dict] = {}
    for row in rows:
        hour = row["created_at"].replace(minute=0, second=0, microsecond=0)
        for party, column in PARTIES.items():
            if (party_id := row.get(column)) is None:
                continue
            s = acc.setdefault((row["org_id"], hour, party, party_id), dict.fromkeys(SUMS, 0))
            s["requests"] += 1
            s["errors"] += int(row["status"] >= 400)
            for name in SUMS[2:]:
                s[name] += row[name]
    return [{"org_id": k[0], "hour": k[1], "party": k[2], "party_id": k[3], **v} for k, v in acc.items()]


def upsert_party_rollups(session: Session, rows: list[dict]) -> None:
    if not rows:
        return
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(PartyRollup)
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "hour", "party", "party_id"],
        set_={name: getattr(PartyRollup, name) + getattr(stmt.excluded, name) for name in SUMS},
    )
    session.execute(stmt, rows)


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
        where = [UsageRollup.mechanism != ""] if group_by == "mechanism" else [UsageRollup.mechanism == ""]
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

"""Ledger: one row per inference request, with benchmark cost, charge and saving."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class LedgerEntry(Base):
    __tablename__ = "ledger_entry"
    __table_args__ = (
        Index("ix_ledger_org_created", "org_id", "created_at"),
        Index("ix_ledger_created", "created_at"),
        Index("ix_ledger_model_created", "requested_model", "created_at"),
        Index("ix_ledger_status_created", "status", "created_at"),
        # per-user and per-app activity: the logs' user filter and the CSV export's keyset walk
        Index("ix_ledger_user_created", "user_id", "created_at", "id"),
        Index("ix_ledger_app_created", "app_id", "created_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id"))
    user_id: Mapped[int | None] = mapped_column(Integer)
    app_id: Mapped[int | None] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(64))
    requested_model: Mapped[str] = mapped_column(String(160), default="")
    model: Mapped[str] = mapped_column(String(160), default="")  # resolved slug
    provider: Mapped[str] = mapped_column(String(64), default="")
    upstream_model: Mapped[str] = mapped_column(String(160), default="")
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)  # no provider usage (cut stream)
    # the benchmark holds an estimate (removed tokens scaled to the provider's, automatic caching)
    benchmark_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    benchmark_micros: Mapped[int] = mapped_column(BigInt, default=0)
    charge_micros: Mapped[int] = mapped_column(BigInt, default=0)
    saved_micros: Mapped[int] = mapped_column(BigInt, default=0)
    saved_by: Mapped[str] = mapped_column(String(255), default="")  # mechanism -> micros, "k=v,..."
    cache: Mapped[str] = mapped_column(String(16), default="miss")
    status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttfb_ms: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    upstream_id: Mapped[str | None] = mapped_column(String(128))  # the provider's request or generation id
    byok: Mapped[bool] = mapped_column(Boolean, default=False)  # served with the org's own provider key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RollupSums:
    """The hourly sums every rollup table keeps (the writer adds a batch's rows to them)."""

    requests: Mapped[int] = mapped_column(BigInt, default=0)
    errors: Mapped[int] = mapped_column(BigInt, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    benchmark_micros: Mapped[int] = mapped_column(BigInt, default=0)
    charge_micros: Mapped[int] = mapped_column(BigInt, default=0)
    saved_micros: Mapped[int] = mapped_column(BigInt, default=0)


class UsageRollup(RollupSums, Base):
    """Hourly totals per org and requested model, kept current by the ledger writer in the same
    transaction as the rows. `mechanism` "" holds the totals; other rows hold what one savings
    mechanism saved. Usage views and the savings page read these, never the raw ledger."""

    __tablename__ = "usage_rollup"
    __table_args__ = (UniqueConstraint("org_id", "hour", "model", "mechanism"),
                      Index("ix_usage_rollup_hour", "hour"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))  # first column of the unique index
    hour: Mapped[datetime]
    model: Mapped[str] = mapped_column(String(160))
    mechanism: Mapped[str] = mapped_column(String(32), default="")


class PartyRollup(RollupSums, Base):
    """Hourly totals per org and key, user, app or serving provider (`party` "key" | "user" | "app" |
    "provider", `party_id`), kept current by the ledger writer in the same transaction as the rows,
    for usage grouped by who called (GET /v1/usage/timeseries?group_by=key|user|app, the console's
    per-user usage) or by provider (the console's cost trends) without reading the raw ledger."""

    __tablename__ = "party_rollup"
    __table_args__ = (UniqueConstraint("org_id", "hour", "party", "party_id"),
                      Index("ix_party_rollup_party_hour", "party", "hour"))  # every org's users, by hour
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))  # first column of the unique index
    hour: Mapped[datetime]
    party: Mapped[str] = mapped_column(String(8))
    party_id: Mapped[int] = mapped_column(Integer)


class PartyDayRollup(RollupSums, Base):
    """The party rollups summed per UTC day (`day` at midnight), added by the writer with the hourly
    ones: a month of per-user usage reads 30 rows per user instead of 720."""

    __tablename__ = "party_day_rollup"
    # (org, party, day): one org's users (or providers) over a range of days read one index range
    __table_args__ = (UniqueConstraint("org_id", "party", "day", "party_id"),
                      Index("ix_party_day_rollup_party_day", "party", "day"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))  # first column of the unique index
    day: Mapped[datetime]
    party: Mapped[str] = mapped_column(String(8))
    party_id: Mapped[int] = mapped_column(Integer)

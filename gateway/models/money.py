"""Money records beside the ledger: idempotency records, BYOK provider keys and their rejections,
reconciliation reports, top-up requests. Every row carries its org (reports carry none: they compare the operator's
whole account at a provider)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class IdempotencyRecord(Base):
    """A completed request's reply, kept for `Idempotency-Key` replays (24 h).

    Written by the ledger writer, never on the request path; not unique on (org_id, key): a key
    reused after expiry appends a row, and the newest unexpired row wins at load."""

    __tablename__ = "idempotency_record"
    __table_args__ = (Index("ix_idempotency_org_key", "org_id", "idem_key"),
                      Index("ix_idempotency_expires", "expires_at"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    idem_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of endpoint + body
    request_id: Mapped[str] = mapped_column(String(64))  # the original request
    status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(128))
    headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    body: Mapped[bytes] = mapped_column(LargeBinary)
    chunks: Mapped[str | None] = mapped_column(Text)  # JSON list of chunk lengths: a stream
    usage: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the original's usage, for the benchmark
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ByokKey(Base):
    """An org's own key for one provider (AES-256-GCM, as operator keys). One live key per org and
    provider: adding another replaces it."""

    __tablename__ = "byok_key"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    provider: Mapped[str] = mapped_column(String(64))  # the catalog provider's name
    api_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    last4: Mapped[str] = mapped_column(String(4))
    created_by: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


class ByokRejection(Base):
    """The provider refused an org's BYOK key (queued by the request, written by the ledger writer).
    The console flags a key with a rejection newer than the key."""

    __tablename__ = "byok_rejection"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    byok_key_id: Mapped[int] = mapped_column(ForeignKey("byok_key.id"), index=True)
    upstream_status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconciliationLine(Base):
    """Ours vs the provider's figures for one provider, model and UTC day."""

    __tablename__ = "reconciliation_line"
    __table_args__ = (Index("ix_reconciliation_day", "day", "provider"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(160))
    our_requests: Mapped[int] = mapped_column(BigInt, default=0)
    their_requests: Mapped[int | None] = mapped_column(BigInt)
    our_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    their_tokens: Mapped[int | None] = mapped_column(BigInt)
    our_cost_micros: Mapped[int] = mapped_column(BigInt, default=0)  # what the routes' prices say we owe
    their_cost_micros: Mapped[int | None] = mapped_column(BigInt)
    drift: Mapped[float] = mapped_column(Float, default=0.0)  # the largest relative difference
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TopupRequest(Base):
    """Credits asked for from the dashboard, waiting for an operator: `status` pending -> approved
    (one top-up transaction, `txn_id`) or rejected. Only a pending request changes, once."""

    __tablename__ = "topup_request"
    __table_args__ = (Index("ix_topup_request_org_created", "org_id", "created_at"),
                      Index("ix_topup_request_status", "status", "created_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    amount_micros: Mapped[int] = mapped_column(BigInt)
    note: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | approved | rejected
    requested_by: Mapped[str] = mapped_column(String(254), default="")
    decided_by: Mapped[str | None] = mapped_column(String(254))
    decided_at: Mapped[datetime | None]
    txn_id: Mapped[int | None] = mapped_column(BigInt)  # the credit transaction an approval made
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

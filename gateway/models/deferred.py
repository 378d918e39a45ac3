"""Deferred requests: chat requests that said they can wait (`x-gateway-deadline` or their app's
policy), kept here from the moment they are accepted (202) until their result is in and delivered.

A row is `queued` until a flush claims it (`claimed`, with the claim's token and time), then
`submitted` (its provider batch is `batch_id`; its result lives on the batch's request row with the
same request id) or `failed` (never submitted; `error` says why, nothing charged). The webhook
columns track the delivery of the result to the app's webhook URL, retried with backoff.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class DeferredRequest(Base):
    __tablename__ = "deferred_request"
    __table_args__ = (Index("ix_deferred_request_queue", "status", "org_id", "provider", "created_at"),
                      Index("ix_deferred_request_webhook", "webhook_state", "webhook_next_at"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)  # the client's id, the ledger row's
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    # Who sent it (the principal is rebuilt from these at the flush, in any process)
    key_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    app_id: Mapped[int | None] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(64))  # the batch it joins: one per (org, provider)
    body_z: Mapped[bytes] = mapped_column(LargeBinary)  # the client's body, zlib-compressed
    held_micros: Mapped[int] = mapped_column(BigInt, default=0)
    hold_ref: Mapped[str | None] = mapped_column(String(64))  # the shared hold's id when Redis holds it
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|claimed|submitted|failed
    claim_token: Mapped[str | None] = mapped_column(String(64), index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(32))  # the claiming process
    claimed_at: Mapped[datetime | None]
    batch_id: Mapped[int | None] = mapped_column(BigInt, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Webhook delivery: none (no URL) | pending | delivered | failed (gave up after the last attempt)
    webhook_state: Mapped[str] = mapped_column(String(16), default="none")
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_next_at: Mapped[datetime | None]
    webhook_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]

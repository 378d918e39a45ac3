"""Batch: files, batches, their provider parts and their requests, all scoped to an org.

A `Batch` is what the client sees (the gateway's own id); its lines are grouped by provider into
`BatchPart`s, each one provider batch (the provider's ids kept there); every line is a
`BatchRequest` that carries its price, its hold share, its outcome and its result (zlib-compressed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class BatchFile(Base):
    """An uploaded input file or a batch's output/error file; `content_z` is zlib-compressed."""

    __tablename__ = "batch_file"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInt, default=0)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    content_z: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]


class Batch(Base):
    __tablename__ = "batch"
    __table_args__ = (UniqueConstraint("org_id", "idempotency_key"), Index("ix_batch_org_created", "org_id", "created_at"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    key_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    app_id: Mapped[int | None] = mapped_column(Integer)
    api: Mapped[str] = mapped_column(String(16))  # openai | anthropic: the shape the client speaks
    mechanism: Mapped[str] = mapped_column(String(32), default="batch")  # batch | batch_arbitrage
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str | None] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(8), default="24h")
    status: Mapped[str] = mapped_column(String(16))
    metadata_json: Mapped[str | None] = mapped_column(Text)
    errors_json: Mapped[str | None] = mapped_column(Text)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    errored: Mapped[int] = mapped_column(Integer, default=0)
    canceled: Mapped[int] = mapped_column(Integer, default=0)
    expired: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInt, default=0)
    held_micros: Mapped[int] = mapped_column(BigInt, default=0)
    benchmark_micros: Mapped[int] = mapped_column(BigInt, default=0)
    charge_micros: Mapped[int] = mapped_column(BigInt, default=0)
    saved_micros: Mapped[int] = mapped_column(BigInt, default=0)
    # The hold is released and every succeeded request has its ledger row: nothing left to do.
    settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class BatchPart(Base):
    """The lines of one batch that go to one provider: one provider batch, polled with backoff."""

    __tablename__ = "batch_part"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    upstream_id: Mapped[str | None] = mapped_column(String(128))  # the provider's batch id
    upstream_file_id: Mapped[str | None] = mapped_column(String(128))
    output_upstream_file_id: Mapped[str | None] = mapped_column(String(128))
    error_upstream_file_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # the provider's, in OpenAI's vocabulary
    done: Mapped[bool] = mapped_column(Boolean, default=False)  # results fetched and recorded
    error: Mapped[str | None] = mapped_column(Text)
    poll_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # Until the provider has the part (no upstream_id): the submitter's lease, after which the
    # poller submits it again (services/batch_submit.py). Then: when to poll it next.
    next_poll_at: Mapped[datetime | None]
    # Added to the batch's hold when the part fell back to the gateway's run (normal price), held
    # under its own name (batch_common.topup_ref) until the batch is settled.
    topup_micros: Mapped[int] = mapped_column(BigInt, default=0, server_default="0")


class BatchRequest(Base):
    """One line of a batch: its route and prices at submission, its hold share, outcome and result."""

    __tablename__ = "batch_request"
    __table_args__ = (UniqueConstraint("batch_id", "custom_id"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    part_id: Mapped[int | None] = mapped_column(ForeignKey("batch_part.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)  # the ledger row's request id
    # Who sent it, when not the batch's owner (arbitrage groups requests of the org's keys into one batch).
    key_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    app_id: Mapped[int | None] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(String(512))
    line: Mapped[int] = mapped_column(Integer)
    requested_model: Mapped[str] = mapped_column(String(160))
    model: Mapped[str] = mapped_column(String(160))
    provider: Mapped[str] = mapped_column(String(64))
    upstream_model: Mapped[str] = mapped_column(String(160))
    prices_json: Mapped[str] = mapped_column(Text)  # route and reference prices, batch percent
    body_z: Mapped[bytes] = mapped_column(LargeBinary)  # the client's body (model as sent)
    held_micros: Mapped[int] = mapped_column(BigInt, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|succeeded|errored|canceled|expired
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    benchmark_micros: Mapped[int] = mapped_column(BigInt, default=0)
    charge_micros: Mapped[int] = mapped_column(BigInt, default=0)
    saved_micros: Mapped[int] = mapped_column(BigInt, default=0)
    upstream_id: Mapped[str | None] = mapped_column(String(128))
    result_z: Mapped[bytes | None] = mapped_column(LargeBinary)  # {"status_code", "body"} or {"error"}

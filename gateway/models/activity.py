"""Activity beyond the ledger: error reports (the gateway's own failures and clients' reports) and
the opt-in content log (conversations, encrypted, with a retention)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class ErrorReport(Base):
    """One error: a failed request (source "gateway" or "upstream", written by the ledger writer
    from the request's ledger row) or a client's report (source "client", POST /v1/error-reports)."""

    __tablename__ = "error_report"
    __table_args__ = (Index("ix_error_report_org_created", "org_id", "created_at"),
                      Index("ix_error_report_created", "created_at"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    source: Mapped[str] = mapped_column(String(16))  # gateway | upstream | client
    type: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(160), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[int | None] = mapped_column(Integer)
    key_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    app_id: Mapped[int | None] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(120), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContentLogSetting(Base):
    """Content logging for an org (app_id None) or one of its apps: on with a retention in days.
    No row: off (the default). An app's row wins over its org's."""

    __tablename__ = "content_log_setting"
    __table_args__ = (UniqueConstraint("org_id", "app_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id"))
    retention_days: Mapped[int] = mapped_column(Integer)  # 0: off (an app turning its org's setting off)
    updated_by: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContentLog(Base):
    """A request's conversation, AES-256-GCM encrypted (aad: the request id), kept until `expires_at`."""

    __tablename__ = "content_log"
    __table_args__ = (Index("ix_content_log_org_created", "org_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    app_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    input_enc: Mapped[bytes] = mapped_column(LargeBinary)
    output_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

"""Stored responses (OpenAI Responses API): the conversation behind a response id, per org."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class StoredResponse(Base):
    """One response kept for `previous_response_id` and `GET /v1/responses/{id}`.

    Written by the ledger writer, never on the request path. `response_id` is not unique on
    purpose: a duplicate id from an upstream must not fail the writer's batch (and the ledger
    rows in it); lookups take the newest row of the caller's org.
    """

    __tablename__ = "stored_response"
    __table_args__ = (Index("ix_stored_response_org_response", "org_id", "response_id"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    response_id: Mapped[str] = mapped_column(String(128))
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))  # indexed first in (org_id, response_id)
    model: Mapped[str] = mapped_column(String(160), default="")
    # The upstream provider that also holds this id (pass-through); "" when the gateway built it.
    provider: Mapped[str] = mapped_column(String(64), default="")
    upstream_stored: Mapped[bool] = mapped_column(Boolean, default=False)
    conversation: Mapped[list[Any]] = mapped_column(JSON)  # input items (history expanded) + output items
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the response object as the client got it
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

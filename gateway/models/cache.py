"""Savings stores: exact-cache and semantic-cache entries, conversation summaries.

Written off the hot path by the ledger writer and loaded into memory at start; requests read
memory only. `scope` is `org:<id>` unless two orgs opted into a shared scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class CacheEntry(Base):
    __tablename__ = "cache_entry"
    __table_args__ = (Index("ix_cache_entry_scope_key", "scope", "key"),
                      Index("ix_cache_entry_expires", "expires_at"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)  # the org that paid for it
    scope: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(160))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # canonical ChatResponse
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class SemanticEntry(Base):
    __tablename__ = "semantic_entry"
    __table_args__ = (Index("ix_semantic_entry_scope_model", "scope", "model"),
                      Index("ix_semantic_entry_expires", "expires_at"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    scope: Mapped[str] = mapped_column(String(80))
    model: Mapped[str] = mapped_column(String(160))
    context_key: Mapped[str] = mapped_column(String(64))  # everything but the last user message
    text: Mapped[str] = mapped_column(Text)  # the last user message
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ConversationSummary(Base):
    __tablename__ = "conversation_summary"
    __table_args__ = (Index("ix_conversation_summary_org_prefix", "org_id", "prefix_hash"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    prefix_hash: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    tokens_before: Mapped[int] = mapped_column(default=0)
    tokens_after: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

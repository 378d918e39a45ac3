"""Catalog: providers, model slugs with their routes, aliases and fallback chains."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigInt, utcnow


class Provider(Base):
    __tablename__ = "provider"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(512))
    api_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # AES-256-GCM; see crypto.py
    api_key_env: Mapped[str | None] = mapped_column(String(128))
    # A key saved in the console: it wins over api_key_enc / api_key_env (what the config and the
    # environment supply, re-applied at every start) until it is reset. AES-256-GCM, associated data
    # b"console:" + name; console_key_hint holds its last 4 characters, all the console ever shows.
    console_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    console_key_hint: Mapped[str | None] = mapped_column(String(8))
    # The admin key of the provider's usage and cost report API (reconciliation), stored as api_key.
    admin_api_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    admin_api_key_env: Mapped[str | None] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    responses_api: Mapped[bool | None] = mapped_column(Boolean)  # serves /v1/responses? None: unknown
    # Has a batch API of its kind (OpenAI's Files + Batches, Anthropic's Message Batches)? None:
    # decided from its kind and address (providers/batch_api.has_batch_api)
    batch_api: Mapped[bool | None] = mapped_column(Boolean)
    # Loopback and private addresses are refused unless set (a local Ollama or vLLM); see providers/egress.py.
    allow_private: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Model(Base):
    __tablename__ = "model"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(160), unique=True)
    context_window: Mapped[int | None] = mapped_column(Integer)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Route(Base):
    """One way to serve a model. Prices are micro-dollars per million tokens."""

    __tablename__ = "route"
    __table_args__ = (UniqueConstraint("model_id", "provider_id", "upstream_model"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id", ondelete="CASCADE"), index=True)
    upstream_model: Mapped[str] = mapped_column(String(160))
    input_micros_per_mtok: Mapped[int] = mapped_column(BigInt, default=0)
    output_micros_per_mtok: Mapped[int] = mapped_column(BigInt, default=0)
    cached_input_micros_per_mtok: Mapped[int | None] = mapped_column(BigInt)
    context_window: Mapped[int | None] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)  # 0 is the reference route
    weight: Mapped[int] = mapped_column(Integer, default=1)  # for the weighted strategy
    # Comma-separated: tools, vision, streaming, json_mode. None: not declared, assume all.
    capabilities: Mapped[str | None] = mapped_column(String(128))
    # The provider's batch price as a percent of list (None: 50 where the provider has a batch API).
    batch_price_pct: Mapped[int | None] = mapped_column(Integer)


class Alias(Base):
    __tablename__ = "alias"
    __table_args__ = (UniqueConstraint("name", "org_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(160))
    target: Mapped[str] = mapped_column(String(160))  # a slug; with `strategy`, the first of `targets`
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)  # None: global
    strategy: Mapped[str | None] = mapped_column(String(32))  # over several slugs
    targets: Mapped[str | None] = mapped_column(Text)  # JSON list of slugs, with `strategy`


class Fallback(Base):
    __tablename__ = "fallback"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_slug: Mapped[str] = mapped_column(String(160), unique=True)
    chain: Mapped[str] = mapped_column(Text)  # JSON list of slugs

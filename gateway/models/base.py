"""Declarative base and shared column helpers."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase

# Explicit constraint names keep Alembic migrations stable across SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (so that autoincrement primary keys work there).
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# Naive UTC, as every stored time. Each request takes several; `datetime.utcnow` is a tenth of the
# cost of now(UTC).replace(tzinfo=None), which Python 3.12 deprecates it in favour of.
utcnow = datetime.utcnow if sys.version_info < (3, 12) else _utcnow


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime()}

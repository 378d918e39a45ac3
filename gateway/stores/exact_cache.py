"""Exact-cache store: an in-memory LRU per scope with a TTL per entry, persisted off the hot path.

Requests read and write memory only: `put` keeps the answer in memory and queues its row for the
ledger writer (`WRITER.enqueue_record`); `load` (at start) replaces memory with the unexpired
rows of the `cache_entry` table and deletes the expired ones. An entry past its TTL is never
served; expired entries leave memory when met, or as the LRU evicts them.

Single process: gevent greenlets never switch inside these methods, so no lock is needed. With
several workers each holds its own memory (an answer cached by one reaches the others at their
next start); the scaled-out store is Redis (see ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.ledger.writer import WRITER
from gateway.memo import MEMO
from gateway.models import CacheEntry
from gateway.wire.canonical import ChatResponse, Part, ToolCall, Usage

log = logging.getLogger(__name__)

LOAD_PER_SCOPE = 10_000  # newest entries loaded per scope when the config sets no max_entries


# ---- canonical ChatResponse <-> JSON (the `response` column) ----------------------------------

def response_to_dict(resp: ChatResponse) -> dict[str, Any]:
    return dataclasses.asdict(resp)


def _only(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` knows: rows written by another version may carry more, or fewer."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def response_from_dict(data: dict[str, Any]) -> ChatResponse:
    fields = _only(ChatResponse, data)
    fields["content"] = [Part(**_only(Part, p)) for p in data.get("content") or []]
    fields["tool_calls"] = [ToolCall(**_only(ToolCall, c)) for c in data.get("tool_calls") or []]
    fields["usage"] = Usage(**_only(Usage, data.get("usage") or {}))
    return ChatResponse(**fields)


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def _naive_utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Entry:
    response: ChatResponse  # shared by every hit: never mutate it
    expires: float  # epoch seconds


class ExactStore:
    """(scope, key) -> canonical ChatResponse, an LRU per scope. `clock` is swappable in tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._scopes: dict[str, OrderedDict[str, Entry]] = {}

    def get(self, scope: str, key: str) -> ChatResponse | None:
        """The unexpired answer stored under `key` in `scope`, or None; a hit becomes most recent."""
        lru = self._scopes.get(scope)
        entry = lru.get(key) if lru is not None else None
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del lru[key]
            return None
        lru.move_to_end(key)
        return entry.response

    def put(self, scope: str, key: str, resp: ChatResponse, *, org_id: int, model: str, ttl: float,
            max_entries: int) -> None:
        """Keep `resp` for `ttl` seconds (the scope holds at most `max_entries`) and queue its row."""
        if ttl <= 0 or max_entries <= 0:
            return
        now = self.clock()
        expires = now + ttl
        self._remember(scope, key, Entry(resp, expires), max_entries, now)
        WRITER.enqueue_record(CacheEntry, {
            "org_id": org_id, "scope": scope[:80], "key": key, "model": model[:160],
            "response": response_to_dict(resp), "created_at": _naive_utc(now),
            "expires_at": _naive_utc(expires),
        })

    def _remember(self, scope: str, key: str, entry: Entry, max_entries: int, now: float) -> None:
        lru = self._scopes.setdefault(scope, OrderedDict())
        lru[key] = entry
        lru.move_to_end(key)
        while lru:  # the least recently used first: expired ones go, then any over the bound
            oldest_key, oldest = next(iter(lru.items()))
            if len(lru) <= max_entries and oldest.expires > now:
                break
            del lru[oldest_key]

    def size(self, scope: str | None = None) -> int:
        if scope is not None:
            return len(self._scopes.get(scope, ()))
        return sum(len(lru) for lru in self._scopes.values())

    def clear(self) -> None:
        self._scopes.clear()

    def load(self, session: Session) -> int:
        """Replace memory with the table's unexpired entries (newest first, up to the configured
        max_entries per scope) and delete the expired rows. Called at start; returns the count."""
        now = self.clock()
        session.execute(delete(CacheEntry).where(CacheEntry.expires_at <= _naive_utc(now)))
        config = (MEMO.policy.settings.get("savings") or {}).get("exact_cache") or {}
        bound = int(config.get("max_entries") or LOAD_PER_SCOPE)
        newest: dict[str, dict[str, Entry]] = {}
        rows = session.scalars(select(CacheEntry).where(CacheEntry.expires_at > _naive_utc(now))
                               .order_by(CacheEntry.id.desc()).execution_options(yield_per=500))
        for row in rows:
            kept = newest.setdefault(row.scope, {})
            if row.key in kept or len(kept) >= bound:
                continue
            try:
                kept[row.key] = Entry(response_from_dict(row.response), _epoch(row.expires_at))
            except (TypeError, ValueError):
                log.warning("skipped an unreadable cache entry %s", row.id)
        self._scopes = {scope: OrderedDict(reversed(list(kept.items()))) for scope, kept in newest.items()}
        return self.size()


STORE = ExactStore()

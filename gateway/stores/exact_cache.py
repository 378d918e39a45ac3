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

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.orm import Session

from gateway.ledger.writer import WRITER
from gateway.models import CacheEntry
from gateway.stores.entries import Entry, entry_of, load_bound, row_fields, unexpired_rows
from gateway.wire.canonical import ChatResponse

log = logging.getLogger(__name__)

LOAD_PER_SCOPE = 10_000  # newest entries loaded per scope when the config sets no max_entries


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
        entry = Entry(resp, now, now + ttl)
        self._remember(scope, key, entry, max_entries, now)
        WRITER.enqueue_record(CacheEntry, {**row_fields(entry, org_id=org_id, scope=scope, model=model),
                                           "key": key})

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
        bound = load_bound("exact_cache", LOAD_PER_SCOPE)
        newest: dict[str, dict[str, Entry]] = {}
        for row in unexpired_rows(session, CacheEntry, self.clock()):
            kept = newest.setdefault(row.scope, {})
            if row.key in kept or len(kept) >= bound:
                continue
            try:
                kept[row.key] = entry_of(row)
            except (TypeError, ValueError):
                log.warning("skipped an unreadable cache entry %s", row.id)
        self._scopes = {scope: OrderedDict(reversed(list(kept.items()))) for scope, kept in newest.items()}
        return self.size()


STORE = ExactStore()

"""Exact-cache store: an in-memory LRU per scope with a TTL per entry, persisted off the hot path.

Requests read and write memory only: `put` keeps the answer in memory and queues its row for the
ledger writer (`WRITER.enqueue_record`); `load` (at start) replaces memory with the unexpired
rows of the `cache_entry` table and deletes the expired ones. An entry past its TTL is never
served; expired entries leave memory when met, or as the LRU evicts them.

Single process: gevent greenlets never switch inside these methods, so no lock is needed.

Scaled out (`GATEWAY_REDIS_URL`), every worker's answers are also in Redis, so an answer cached by
one worker is a hit on every other: `put` also writes `gw:exact:<scope>:<key>` with the entry's TTL
and indexes it in the scope's sorted set (scored by expiry, trimmed to max_entries, soonest to
expire first); a local miss reads Redis once and keeps what it found in memory. Keys carry the
scope (`org:<id>` or an opted-in `shared:<name>`), so one org never reads another's entry.
Advisory: a Redis error marks the link down (stores/shared.py) and the store serves from memory.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from sqlalchemy.orm import Session

from gateway.ledger.writer import WRITER
from gateway.models import CacheEntry
from gateway.stores import shared
from gateway.stores.entries import Entry, entry_of, load_bound, response_from_dict, response_to_dict, row_fields, unexpired_rows
from gateway.wire.canonical import ChatResponse

log = logging.getLogger(__name__)

LOAD_PER_SCOPE = 10_000  # newest entries loaded per scope when the config sets no max_entries
PREFIX = "gw:exact:"
# KEYS: entry, scope index. ARGV: value, ttl ms, expires ms, now ms, max entries.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do redis.call('DEL', gone[i]) end
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


class ExactStore:
    """(scope, key) -> canonical ChatResponse, an LRU per scope. `clock` is swappable in tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._scopes: dict[str, OrderedDict[str, Entry]] = {}
        self._put_script = None

    def get(self, scope: str, key: str) -> ChatResponse | None:
        """The unexpired answer stored under `key` in `scope`, or None; a hit becomes most recent."""
        lru = self._scopes.get(scope)
        entry = lru.get(key) if lru is not None else None
        if entry is None:
            return self._shared_get(scope, key) if shared.enabled() else None
        if entry.expires <= self.clock():
            del lru[key]
            return None
        lru.move_to_end(key)
        return entry.response

    def _shared_get(self, scope: str, key: str) -> ChatResponse | None:
        """Another worker's answer from Redis (kept in memory from now on), or None."""
        client = shared.client()
        if client is None:
            return None
        try:
            raw = client.get(PREFIX + scope + ":" + key)
        except Exception as e:
            shared.failed(e)
            return None
        shared.recovered()
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            entry = Entry(response_from_dict(data["r"]), float(data["c"]), float(data["e"]))
        except (TypeError, ValueError, KeyError):
            log.warning("skipped an unreadable shared cache entry in %s", scope)
            return None
        now = self.clock()
        if entry.expires <= now:
            return None
        self._remember(scope, key, entry, int(data.get("m") or LOAD_PER_SCOPE), now)
        return entry.response

    def _shared_put(self, scope: str, key: str, entry: Entry, max_entries: int) -> None:
        client = shared.client()
        if client is None:
            return
        value = orjson.dumps({"r": response_to_dict(entry.response), "c": entry.created, "e": entry.expires,
                              "m": max_entries})
        ttl_ms = max(1, int((entry.expires - entry.created) * 1000))
        try:
            if self._put_script is None:
                self._put_script = client.register_script(_PUT)
            self._put_script(keys=[PREFIX + scope + ":" + key, PREFIX + "idx:" + scope],
                             args=[value, ttl_ms, int(entry.expires * 1000), int(entry.created * 1000), max_entries],
                             client=client)
        except Exception as e:
            shared.failed(e)
            return
        shared.recovered()

    def put(self, scope: str, key: str, resp: ChatResponse, *, org_id: int, model: str, ttl: float,
            max_entries: int) -> None:
        """Keep `resp` for `ttl` seconds (the scope holds at most `max_entries`) and queue its row."""
        if ttl <= 0 or max_entries <= 0:
            return
        now = self.clock()
        entry = Entry(resp, now, now + ttl)
        self._remember(scope, key, entry, max_entries, now)
        if shared.enabled():
            self._shared_put(scope, key, entry, max_entries)
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

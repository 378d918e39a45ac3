"""Semantic-cache index: per (scope, model) a float32 matrix of unit vectors, searched by brute force.

Requests read and write memory only: `put` keeps the entry in memory and queues its row for the
ledger writer (`WRITER.enqueue_record` into `semantic_entry`); `load` (at start) replaces memory
with the table's unexpired rows and deletes the expired ones. Each partition keeps at most
`max_entries` (expired entries go first, then the oldest) and never serves an expired entry.

Search is one matrix-vector product over the partition (about 1 ms for 10k × 384 on one core),
masked to the request's context key, so it runs inline; past a few hundred thousand rows move to
an ANN index (see STACK.md §4). Vectors of different widths (an operator switched embedders) live
in separate partitions, so they never meet. Single process: greenlets never switch inside these
methods, so no lock is needed; each worker holds its own index.

Scaled out (GATEWAY_REDIS_URL), every entry a worker adds is sent to the others over Redis pub/sub
(stores/shared_bus.py, channel `semantic`) with its vector, and each adds it to its own index
(`receive`): the vectors stay in each worker's memory, searched there, and one worker's answer
is a hit on all. The partition key carries the scope, so entries stay per org. Advisory: a
message lost while Redis is away leaves that entry on its own worker (and in the table, which
every worker loads at its next start).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable

import numpy as np
import orjson
from sqlalchemy.orm import Session

from gateway.ledger.writer import WRITER
from gateway.models import SemanticEntry
from gateway.stores import shared, shared_bus
from gateway.stores.entries import Entry, entry_of, load_bound, response_from_dict, response_to_dict, row_fields, unexpired_rows
from gateway.wire.canonical import ChatResponse

log = logging.getLogger(__name__)

LOAD_PER_PARTITION = 10_000  # newest entries loaded per partition when the config sets no max_entries


class Partition:
    """One (scope, model, width) matrix; rows [0, n) are live, in step with `entries`."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.vectors = np.zeros((16, dim), dtype=np.float32)
        self.codes = np.zeros(16, dtype=np.int64)  # context key -> small int, for a vectorised mask
        self.expires = np.zeros(16, dtype=np.float64)
        self.created = np.zeros(16, dtype=np.float64)
        self.entries: list[Entry] = []
        self._codes: dict[str, int] = {}

    def search(self, vector: np.ndarray, context_key: str, threshold: float, now: float,
               limit: int) -> list[tuple[float, Entry]]:
        """Entries of `context_key` at cosine >= threshold, best first (at most `limit`)."""
        code = self._codes.get(context_key)
        if code is None or self.n == 0:
            return []
        n = self.n
        scores = self.vectors[:n] @ vector
        ok = (self.codes[:n] == code) & (self.expires[:n] > now) & (scores >= threshold)
        found = np.flatnonzero(ok)
        if found.size == 0:
            return []
        best = found[np.argsort(-scores[found], kind="stable")[:limit]]
        return [(float(scores[i]), self.entries[i]) for i in best]

    def live(self, context_key: str, now: float) -> np.ndarray:
        """Row numbers of the unexpired entries of `context_key`."""
        code = self._codes.get(context_key)
        if code is None or self.n == 0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero((self.codes[: self.n] == code) & (self.expires[: self.n] > now))

    def add(self, entry: Entry, vector: np.ndarray, max_entries: int, now: float) -> None:
        self._evict(max_entries - 1, now)
        if self.n == len(self.vectors):
            grow = max(16, self.n)
            self.vectors = np.concatenate([self.vectors, np.zeros((grow, self.dim), dtype=np.float32)])
            self.codes = np.concatenate([self.codes, np.zeros(grow, dtype=np.int64)])
            self.expires = np.concatenate([self.expires, np.zeros(grow, dtype=np.float64)])
            self.created = np.concatenate([self.created, np.zeros(grow, dtype=np.float64)])
        i = self.n
        self.vectors[i] = vector
        self.codes[i] = self._codes.setdefault(entry.context_key, len(self._codes))
        self.expires[i] = entry.expires
        self.created[i] = entry.created
        self.entries.append(entry)
        self.n += 1

    def _evict(self, keep: int, now: float) -> None:
        """Drop expired rows; then, while more than `keep` remain, the oldest."""
        for i in reversed(np.flatnonzero(self.expires[: self.n] <= now).tolist()):
            self._remove(i)
        while self.n > max(keep, 0):
            self._remove(int(np.argmin(self.created[: self.n])))

    def _remove(self, i: int) -> None:
        """Swap-remove row i (order does not matter: search ranks by score)."""
        last = self.n - 1
        if i != last:
            self.vectors[i] = self.vectors[last]
            self.codes[i] = self.codes[last]
            self.expires[i] = self.expires[last]
            self.created[i] = self.created[last]
            self.entries[i] = self.entries[last]
        self.entries.pop()
        self.n = last


class SemanticIndex:
    """(scope, model) -> partitions of unit vectors with their answers. `clock` is swappable in tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._parts: dict[tuple[str, str, int], Partition] = {}

    def search(self, scope: str, model: str, context_key: str, vector: np.ndarray, threshold: float,
               limit: int = 5) -> list[tuple[float, Entry]]:
        """The best unexpired entries of this scope, model and context at cosine >= threshold."""
        part = self._parts.get((scope, model, len(vector)))
        if part is None:
            return []
        return part.search(vector, context_key, threshold, self.clock(), limit)

    def few(self, scope: str, model: str, context_key: str, limit: int) -> list[Entry] | None:
        """The live entries of this context (any embedder width) when there are at most `limit`,
        newest first; None when there are more (then search by vector)."""
        now = self.clock()
        found: list[Entry] = []
        for (s, m, _), part in self._parts.items():
            if s == scope and m == model:
                rows = part.live(context_key, now)
                if len(found) + len(rows) > limit:
                    return None
                found += [part.entries[i] for i in rows]
        return sorted(found, key=lambda e: -e.created)

    def put(self, scope: str, model: str, context_key: str, text: str, vector: np.ndarray,
            resp: ChatResponse, *, org_id: int, ttl: float, max_entries: int) -> None:
        """Keep the answer for `ttl` seconds (the partition holds at most `max_entries`); queue its row."""
        if ttl <= 0 or max_entries <= 0:
            return
        now = self.clock()
        vector = np.asarray(vector, dtype=np.float32)
        entry = Entry(resp, now, now + ttl, context_key, text)
        self._partition(scope, model, len(vector)).add(entry, vector, max_entries, now)
        if shared.enabled():
            shared_bus.publish("semantic", orjson.dumps({
                "s": scope, "m": model, "k": context_key, "x": text, "v": base64.b64encode(vector.tobytes()).decode(),
                "r": response_to_dict(resp), "c": entry.created, "e": entry.expires, "n": max_entries}))
        WRITER.enqueue_record(SemanticEntry, {**row_fields(entry, org_id=org_id, scope=scope, model=model),
                                              "context_key": context_key, "text": text,
                                              "embedding": vector.tobytes()})

    def receive(self, payload: bytes) -> None:
        """An entry another worker added: into this worker's index too (its row is that worker's)."""
        data = orjson.loads(payload)
        now = self.clock()
        if float(data["e"]) <= now:
            return
        vector = np.frombuffer(base64.b64decode(data["v"]), dtype=np.float32)
        entry = Entry(response_from_dict(data["r"]), float(data["c"]), float(data["e"]), data["k"], data["x"])
        self._partition(data["s"], data["m"], len(vector)).add(entry, vector, max(1, int(data["n"])), now)

    def _partition(self, scope: str, model: str, dim: int) -> Partition:
        key = (scope, model, dim)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = Partition(dim)
        return part

    def size(self, scope: str | None = None) -> int:
        return sum(p.n for (s, _, _), p in self._parts.items() if scope is None or s == scope)

    def clear(self) -> None:
        self._parts.clear()

    def load(self, session: Session) -> int:
        """Replace memory with the table's unexpired rows (the newest, up to the configured
        max_entries per partition) and delete the expired ones. Called at start; returns the count."""
        now = self.clock()
        bound = load_bound("semantic_cache", LOAD_PER_PARTITION)
        newest: dict[tuple[str, str, int], list[tuple[Entry, np.ndarray]]] = {}
        for row in unexpired_rows(session, SemanticEntry, now):
            try:
                vector = np.frombuffer(row.embedding, dtype=np.float32)
                entry = entry_of(row)
            except (TypeError, ValueError):
                log.warning("skipped an unreadable semantic cache entry %s", row.id)
                continue
            kept = newest.setdefault((row.scope, row.model, len(vector)), [])
            if len(kept) < bound:
                kept.append((entry, vector))
        self._parts = {}
        for (scope, model, dim), kept in newest.items():
            part = self._partition(scope, model, dim)
            for entry, vector in reversed(kept):  # oldest first, as they were added
                part.add(entry, vector, len(kept), now)
        return self.size()


INDEX = SemanticIndex()

"""Prompt prefixes seen lately, per tenant scope (org, key, model): what a provider's prompt cache
would hold for a client calling it directly, and which breakpoints the gateway wrote.

Memory only, per process, bounded (MAX_ENTRIES, least recently used out); an entry lives TTL
seconds from its last sight (the providers' 5-minute cache lifetime, refreshed on use as theirs
is). Keys are (scope, prefix digest): a scope never sees another's prefixes. Losing this state (a
restart, another worker) only makes the next estimates as if the prefixes were new: breakpoints
wait for a second sight, the benchmark counts no automatic caching for them.

Routes that reported cached tokens the gateway did not cause are remembered (`caches`): only
those are assumed to cache automatically, so an upstream that never caches (an OpenAI-compatible
server without a prompt cache) never lowers a benchmark.

Writes the gateway caused are kept until read (a later request of the scope that holds the written
prefix and reports cache reads) or expired unread: `unread(scope_org)` hands the expired ones out
once, for the usage rollups.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

TTL = 300.0  # seconds: Anthropic's default cache lifetime; OpenAI's lasts 5-10 minutes of inactivity
MAX_ENTRIES = 50_000
MAX_WRITES = 10_000

Scope = tuple[int, int | None, str]  # (org id, key id, model slug)


@dataclass(slots=True)
class Write:
    org_id: int
    tokens: int  # cache-write tokens the provider reported
    premium_micros: int  # what writing cost above plain input (the org's money)
    expires: float
    read: bool = False


class PrefixLog:
    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL) -> None:
        self.max_entries, self.ttl = max_entries, ttl
        self.clock = time.monotonic
        self._seen: OrderedDict[tuple[Scope, bytes], float] = OrderedDict()  # -> expiry
        self._writes: OrderedDict[tuple[Scope, bytes], Write] = OrderedDict()  # oldest expiry first
        self._unread: dict[int, list[Write]] = {}  # org id -> writes expired unread, not yet reported
        self._caching: set[int] = set()  # routes that reported cached prompt tokens the gateway did not cause

    def longest(self, scope: Scope, digests: Sequence[bytes], now: float | None = None) -> int:
        """The index of the longest of `digests` (prefixes, shortest first) seen within the TTL, or -1."""
        now = self.clock() if now is None else now
        for i in range(len(digests) - 1, -1, -1):
            expires = self._seen.get((scope, digests[i]))
            if expires is not None and expires > now:
                return i
        return -1

    def add(self, scope: Scope, digests: Sequence[bytes], now: float | None = None) -> None:
        expires = (self.clock() if now is None else now) + self.ttl
        for digest in digests:
            key = (scope, digest)
            self._seen[key] = expires
            self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    # ---- whether a route caches by itself ----------------------------------------------------------

    def saw_caching(self, route_id: int) -> None:
        self._caching.add(route_id)

    def caches(self, route_id: int) -> bool:
        """The route has reported cached tokens of its own at least once (since this process started)."""
        return route_id in self._caching

    # ---- writes the gateway caused ---------------------------------------------------------------

    def wrote(self, scope: Scope, digests: Sequence[bytes], tokens: int, premium_micros: int,
              now: float | None = None) -> None:
        """One write, at whichever of `digests` (the prefixes its breakpoints end) a later read finds."""
        now = self.clock() if now is None else now
        write = Write(scope[0], tokens, premium_micros, now + self.ttl)
        for digest in digests:
            key = (scope, digest)
            self._writes[key] = write
            self._writes.move_to_end(key)
        while len(self._writes) > MAX_WRITES:  # the oldest goes untracked: neither read nor reported
            self._writes.popitem(last=False)[1].read = True

    def read(self, scope: Scope, digests: Sequence[bytes], now: float | None = None) -> None:
        """A request of `scope` holding these prefixes read from the cache: the writes among them
        were read in time."""
        now = self.clock() if now is None else now
        for digest in digests:
            write = self._writes.get((scope, digest))
            if write is not None and write.expires > now:
                write.read = True  # its other keys go when they expire, unreported

    def unread(self, org_id: int, now: float | None = None) -> list[Write]:
        """The org's writes whose TTL passed without a read, each handed out once."""
        now = self.clock() if now is None else now
        while self._writes:  # one TTL for all: the oldest expires first
            key, write = next(iter(self._writes.items()))
            if write.expires > now:
                break
            del self._writes[key]
            if not write.read:
                write.read = True  # reported once, whichever of its keys expires first
                self._unread.setdefault(write.org_id, []).append(write)
        return self._unread.pop(org_id, [])

    def clear(self) -> None:
        self._seen.clear()
        self._writes.clear()
        self._unread.clear()
        self._caching.clear()


PREFIXES = PrefixLog()

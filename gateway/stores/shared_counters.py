"""Spend and rate counters shared by every worker through Redis: the scaled-out `Counters`.

Same methods as `MemoryCounters`, each one Redis round trip running a Lua script, so a check and
its hold (or a bucket's check and take) are atomic across every worker and machine:

- `bal:<org>` is the org's balance as the gate sees it: set from the database balance the first
  time a worker needs it (SETNX), lowered by every settled charge, raised by every credit change
  (`credit()`, called after the credit log's commit by the console and the CLI).
- Holds live per entity (org, user, app, key) in a sorted set scored by expiry and a hash of
  amounts, with their running sum in `held:<entity>`: a worker that dies mid-request leaves holds
  that expire after HOLD_TTL_SECONDS instead of locking the money for good. A hold named by its
  owner (a batch's `batch:<id>`, whose `ttl_seconds` covers the batch's completion window) can be
  settled from any worker, and at most once (`settled:<ref>`), and `restore` puts it back at a
  start if Redis lost it (or refreshes its expiry), unless it was settled already.
- Window spend is one integer per entity, window and window start (`spend:...`), expiring after
  the next window; token buckets are hashes (level, last refill, capacity).

Failure mode: a Redis error marks the link down (stores/shared.py) and the calls fall back to this
worker's own MemoryCounters with its balance divided by the number of workers, so the org's
credits stay conservative while each worker only sees itself; a settle that cannot reach Redis is
kept and replayed when the link is back. If Redis loses its data, balances are set again from the
database (which may lag the last ledger flush, at most a quarter second of charges).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from gateway.stores import shared
from gateway.stores.counters import (
    WINDOWS,
    BudgetCheck,
    Entity,
    Hold,
    Limit,
    LimitState,
    MemoryCounters,
    Refusal,
    next_start,
    window_start,
)

log = logging.getLogger(__name__)

HOLD_TTL_SECONDS = 900  # longer than any request's deadline and stream; then a dead worker's holds go
SETTLED_TTL_SECONDS = 7 * 86400  # how long a named hold's settlement is remembered (no second settle)
PREFIX = "gw:"

_PURGE = """
local function purge(e, now)
  local zk, hk, sk = 'gw:holds:' .. e, 'gw:holdamt:' .. e, 'gw:held:' .. e
  local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
  for _, id in ipairs(gone) do
    local amt = tonumber(redis.call('HGET', hk, id) or '0')
    redis.call('DECRBY', sk, amt)
    redis.call('HDEL', hk, id)
    redis.call('ZREM', zk, id)
  end
  return tonumber(redis.call('GET', sk) or '0')
end
"""
# ARGV: now, expires, hold id, micros, org id, balance to start from, n entities, entities...,
#       n budgets, then per budget: entity, spend key, cap
_HOLD = _PURGE + """
local now, expires, id, micros, org = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
redis.call('SET', 'gw:bal:' .. org, ARGV[6], 'NX')
local balance = tonumber(redis.call('GET', 'gw:bal:' .. org))
local n = tonumber(ARGV[7])
local held = {}
for i = 1, n do held[ARGV[7 + i]] = purge(ARGV[7 + i], now) end
local available = balance - (held['org:' .. org] or 0)
if available <= 0 or micros > available then return {'credits', '0'} end
local b = 8 + n
local nb = tonumber(ARGV[b])
for j = 0, nb - 1 do
  local e, key, cap = ARGV[b + 1 + 3 * j], ARGV[b + 2 + 3 * j], tonumber(ARGV[b + 3 + 3 * j])
  local used = tonumber(redis.call('GET', key) or '0') + (held[e] or purge(e, now))
  if used + micros > cap or used >= cap then return {'budget', tostring(j)} end
end
for i = 1, n do
  local e = ARGV[7 + i]
  redis.call('ZADD', 'gw:holds:' .. e, expires, id)
  redis.call('HSET', 'gw:holdamt:' .. e, id, micros)
  redis.call('INCRBY', 'gw:held:' .. e, micros)
end
return {'ok', tostring(available)}
"""
# ARGV: hold id, charge, org id, once (seconds the settled mark is kept; 0: not marked), n entities,
#       entities..., n spend keys, then per key: key, ttl
_SETTLE = """
local id, charge, org, once = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if once > 0 and not redis.call('SET', 'gw:settled:' .. id, '1', 'NX', 'EX', once) then return 0 end
local n = tonumber(ARGV[5])
for i = 1, n do
  local e = ARGV[5 + i]
  local amt = redis.call('HGET', 'gw:holdamt:' .. e, id)
  if amt and redis.call('ZREM', 'gw:holds:' .. e, id) == 1 then
    redis.call('DECRBY', 'gw:held:' .. e, tonumber(amt))
  end
  redis.call('HDEL', 'gw:holdamt:' .. e, id)
end
if charge ~= 0 then
  if redis.call('EXISTS', 'gw:bal:' .. org) == 1 then redis.call('DECRBY', 'gw:bal:' .. org, charge) end
  local k = 6 + n
  for j = 0, tonumber(ARGV[k]) - 1 do
    redis.call('INCRBY', ARGV[k + 1 + 2 * j], charge)
    redis.call('EXPIRE', ARGV[k + 1 + 2 * j], tonumber(ARGV[k + 2 + 2 * j]))
  end
end
return 1
"""
# ARGV: expires, hold id, micros, n entities, entities...: a named hold back (or its expiry moved on)
_RESTORE = """
local expires, id, micros = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', 'gw:settled:' .. id) == 1 then return 0 end
for i = 1, tonumber(ARGV[4]) do
  local e = ARGV[4 + i]
  if redis.call('ZSCORE', 'gw:holds:' .. e, id) then
    redis.call('ZADD', 'gw:holds:' .. e, expires, id)
  else
    local old = tonumber(redis.call('HGET', 'gw:holdamt:' .. e, id) or '0')
    redis.call('ZADD', 'gw:holds:' .. e, expires, id)
    redis.call('HSET', 'gw:holdamt:' .. e, id, micros)
    redis.call('INCRBY', 'gw:held:' .. e, micros - old)
  end
end
return 1
"""
_BUCKET = """
local function bucket(key, cap, now)
  local v = redis.call('HMGET', 'gw:bucket:' .. key, 'level', 'updated', 'cap')
  local level, updated, c = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if level == nil or c ~= cap then return cap end
  return math.min(cap, level + (now - updated) * cap / 60.0)
end
local function save(key, cap, level, now)
  redis.call('HSET', 'gw:bucket:' .. key, 'level', tostring(level), 'updated', tostring(now), 'cap', tostring(cap))
  redis.call('EXPIRE', 'gw:bucket:' .. key, 120)
end
"""
# ARGV: now, mode ('take' | 'peek'), n, then per bucket: key, per minute, amount
_BUCKETS = _BUCKET + """
local now, mode, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local levels, out, refused = {}, {}, false
for i = 0, n - 1 do
  local key, cap, amount = ARGV[4 + 3 * i], tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i])
  local level = bucket(key, cap, now)
  levels[i] = level
  if mode == 'take' and amount > level then refused = true end
end
for i = 0, n - 1 do
  local key, cap, amount = ARGV[4 + 3 * i], tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i])
  local level = levels[i]
  local retry = 0
  if mode == 'take' then
    if refused then
      if amount > level then retry = math.min(amount - level, cap) * 60.0 / cap end
    else
      level = level - math.min(amount, level)
      save(key, cap, level, now)
    end
  end
  table.insert(out, tostring(level))
  table.insert(out, tostring(retry))
end
return out
"""

# ARGV: now, tokens, keys...: buckets that exist take the difference (down to minus their capacity)
_ADJUST = """
local now, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do
  local k = 'gw:bucket:' .. ARGV[i]
  local v = redis.call('HMGET', k, 'level', 'updated', 'cap')
  local level, updated, cap = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if cap then
    level = math.min(cap, level + (now - updated) * cap / 60.0)
    level = math.max(-cap, level - tokens)
    redis.call('HSET', k, 'level', tostring(level), 'updated', tostring(now))
    redis.call('EXPIRE', k, 120)
  end
end
return 1
"""


def _epoch(now: datetime) -> float:
    return now.timestamp() if now.tzinfo else (now - datetime(1970, 1, 1)).total_seconds()


def _entity(e: Entity) -> str:
    return f"{e[0]}:{e[1]}"


def _spend_key(entity: Entity, window: str, start: datetime) -> str:
    return f"{PREFIX}spend:{_entity(entity)}:{window}:{start:%Y%m%d}"


def _spend_ttl(window: str, start: datetime) -> int:
    """Kept through the next window (rollover reads the previous one), then gone."""
    return int((next_start(window, next_start(window, start)) - start).total_seconds()) + 3600


class RedisCounters:
    """`Counters` over Redis; `local` is the per-worker fallback while Redis is down."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self.local = MemoryCounters()
        self.pending: list[tuple[list, tuple]] = []  # settles that could not reach Redis
        self.instance = uuid.uuid4().hex[:12]
        self._n = 0
        self._scripts: dict[str, object] = {}

    # ---- plumbing -----------------------------------------------------------------------------
    def _run(self, name: str, source: str, args: list):
        """Run a script, or raise ConnectionError when Redis is not there (the caller falls back)."""
        client = shared.client()
        if client is None:
            raise ConnectionError("Redis link is down")
        try:
            script = self._scripts.get(name)
            if script is None:
                script = self._scripts[name] = client.register_script(source)
            result = script(args=args)
        except Exception as e:  # redis-py raises its own ConnectionError/TimeoutError/ResponseError
            shared.failed(e)
            raise ConnectionError(str(e)) from e
        shared.recovered()
        if self.pending:
            self._replay()
        return result

    def _replay(self) -> None:
        pending, self.pending = self.pending, []
        for args, _ in pending:
            try:
                self._run("settle", _SETTLE, args)
            except ConnectionError:
                self.pending.append((args, ()))
                return

    # ---- credits and budgets ------------------------------------------------------------------
    def available(self, org_id: int, balance: int) -> int:
        client = shared.client()
        try:
            if client is None:
                raise ConnectionError("Redis link is down")
            raw, held = client.mget(f"{PREFIX}bal:{org_id}", f"{PREFIX}held:org:{org_id}")
        except Exception as e:
            if not isinstance(e, ConnectionError):
                shared.failed(e)
            return self.local.available(org_id, balance // self.workers)
        return (balance if raw is None else int(raw)) - int(held or 0)

    def held(self, entity: Entity) -> int:
        client = shared.client()
        try:
            if client is None:
                raise ConnectionError("Redis link is down")
            return int(client.get(f"{PREFIX}held:{_entity(entity)}") or 0)
        except Exception as e:
            if not isinstance(e, ConnectionError):
                shared.failed(e)
            return self.local.held(entity)

    def spent(self, entity: Entity, window: str, start: datetime) -> int:
        client = shared.client()
        try:
            if client is None:
                raise ConnectionError("Redis link is down")
            return int(client.get(_spend_key(entity, window, start)) or 0)
        except Exception as e:
            if not isinstance(e, ConnectionError):
                shared.failed(e)
            return self.local.spent(entity, window, start)

    def hold(self, org_id: int, micros: int, balance: int, entities: tuple[Entity, ...],
             budgets: list[BudgetCheck], now: datetime, *, ref: str | None = None,
             ttl_seconds: float | None = None) -> Hold | Refusal:
        everyone = tuple(dict.fromkeys((("org", org_id), *entities)))
        self._n += 1
        hold_id = ref or f"{self.instance}:{self._n}"
        epoch = _epoch(now)
        args: list = [epoch, epoch + (ttl_seconds or HOLD_TTL_SECONDS), hold_id, micros, org_id, balance,
                      len(everyone), *map(_entity, everyone), len(budgets)]
        for b in budgets:
            args += [_entity(b.entity), _spend_key(b.entity, b.window, window_start(b.window, now)), b.cap_micros]
        try:
            verdict, detail = self._run("hold", _HOLD, args)
        except ConnectionError:
            return self.local.hold(org_id, micros, balance // self.workers, entities, budgets, now)
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        if verdict == "credits":
            return Refusal("credits")
        if verdict == "budget":
            return Refusal("budget", budgets[int(detail)].budget_id)
        return Hold(org_id, micros, everyone, ref=hold_id, named=ref is not None)

    def restore(self, hold: Hold, now: datetime, ttl_seconds: float) -> None:
        """A named hold granted before this worker started, put back in Redis if it is gone (Redis
        lost it, or it expired) and kept `ttl_seconds` more; nothing when it was settled already.
        Redis down: this worker's fallback counts it, as the hold itself would have been."""
        everyone = tuple(dict.fromkeys((("org", hold.org_id), *hold.entities)))
        hold.entities, hold.named = everyone, True
        try:
            self._run("restore", _RESTORE, [_epoch(now) + ttl_seconds, hold.ref, hold.micros, len(everyone),
                                            *map(_entity, everyone)])
        except ConnectionError:
            self.local.restore(hold, now, ttl_seconds)
            hold.ref = None

    def settle(self, hold: Hold, charge_micros: int, now: datetime) -> None:
        if hold.settled:
            return
        if hold.ref is None:  # taken by the local fallback
            self.local.settle(hold, charge_micros, now)
            return
        hold.settled = True
        spend = []
        if charge_micros:
            for e in hold.entities:
                for window in WINDOWS:
                    start = window_start(window, now)
                    spend += [_spend_key(e, window, start), _spend_ttl(window, start)]
        args = [hold.ref, charge_micros, hold.org_id, SETTLED_TTL_SECONDS if hold.named else 0, len(hold.entities),
                *map(_entity, hold.entities), len(spend) // 2, *spend]
        try:
            self._run("settle", _SETTLE, args)
        except ConnectionError:
            self.pending.append((args, ()))
            self.local.add_spend(hold.entities, charge_micros, now)

    def credit(self, org_id: int, delta_micros: int, balance_micros: int) -> None:
        """A top-up, refund or adjustment committed to the credit log: move the shared balance by it,
        or start it at the committed balance (no worker has charged through Redis yet: a new org,
        or a Redis that lost its data), so no worker starts it from a view that predates the change."""
        client = shared.client()
        if client is None:
            return
        try:
            client.eval("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end "
                        "return redis.call('SET', KEYS[1], ARGV[2])", 1, f"{PREFIX}bal:{org_id}", delta_micros,
                        balance_micros)
        except Exception as e:
            shared.failed(e)

    def seed(self, rows: list[tuple[Entity, datetime, int]]) -> None:
        """Window spend from the database at start: shared values win when Redis has them."""
        self.local.seed(rows)
        sums: dict[tuple[str, int], int] = {}
        for entity, at, micros in rows:
            for window in WINDOWS:
                start = window_start(window, at)
                key = (_spend_key(entity, window, start), _spend_ttl(window, start))
                sums[key] = sums.get(key, 0) + micros
        client = shared.client()
        if client is None or not sums:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for (key, ttl), micros in sums.items():
                pipe.set(key, micros, nx=True, ex=ttl)
            pipe.execute()
        except Exception as e:
            shared.failed(e)

    def add_spend(self, entities: tuple[Entity, ...], micros: int, at: datetime) -> None:
        self.local.add_spend(entities, micros, at)

    # ---- rate limits --------------------------------------------------------------------------
    def _buckets(self, mode: str, limits: list[tuple[str, int, int]], now: float) -> list[tuple[float, float]]:
        args: list = [now, mode, len(limits)]
        for key, per_minute, amount in limits:
            args += [key, per_minute, amount]
        raw = self._run("buckets", _BUCKETS, args)
        vals = [float(v) for v in raw]
        return list(zip(vals[::2], vals[1::2], strict=True))

    def take(self, limits: list[Limit], now: float) -> list[LimitState]:
        try:
            out = self._buckets("take", [(lim.key, lim.per_minute, lim.amount) for lim in limits], now)
        except ConnectionError:
            return self.local.take([Limit(lim.key, max(1, lim.per_minute // self.workers), lim.amount)
                                    for lim in limits], now)
        return [LimitState(lim.key, lim.per_minute, max(0, int(level)),
                           max(0.0, (lim.per_minute - level) * 60.0 / lim.per_minute), retry)
                for lim, (level, retry) in zip(limits, out, strict=True)]

    def adjust(self, keys: tuple[str, ...], tokens: int, now: float) -> None:
        """Correct the buckets a request was admitted by with its actual tokens (existing buckets only)."""
        try:
            self._run("adjust", _ADJUST, [now, tokens, *keys])
        except ConnectionError:
            self.local.adjust(keys, tokens, now)

    def peek(self, key: str, per_minute: int, now: float) -> LimitState:
        try:
            ((level, _),) = self._buckets("peek", [(key, per_minute, 0)], now)
        except ConnectionError:
            return self.local.peek(key, per_minute, now)
        return LimitState(key, per_minute, max(0, int(level)), max(0.0, (per_minute - level) * 60.0 / per_minute), 0.0)

    def reset(self) -> None:
        """A worker's start: only its own fallback state; the shared counters belong to every worker."""
        self.local.reset()
        self.pending.clear()


"""Breakers shared by every worker when scaled out: one route's failures count wherever they happen.

HealthBoard (routing/health.py) calls this only on a failure or a recovery. A failure increments
`gw:brk:<route>` in Redis, a counter that lives for the breaker's cooldown from its first failure
(a short window: failures spread over a longer time never add up); when it reaches the breaker's
threshold the breaker opens here, and an opened breaker is announced to the other workers
(stores/shared_bus.py), which open theirs from the moment they hear it; it is also noted in the
hash `gw:brk:open` (route -> until when, epoch ms), which a worker reads when its listener
(re)connects, so one that starts (or was cut off) during a cooldown skips the route too. A recovery
(a success after failures, or a probe that closed the breaker) resets the counter, clears the note
and closes the others' breakers.

Failure mode: advisory. Without Redis each worker's breakers are its own, as in one process.
"""

from __future__ import annotations

import time

import orjson

from gateway.stores import shared, shared_bus

PREFIX = "gw:brk:"
OPEN = "gw:brk:open"
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class SharedBreakers:
    def __init__(self, board) -> None:
        self.board = board
        self._script = None

    def failed(self, route_id: int, threshold: int, cooldown: float) -> bool:
        """Count one failure of the route across workers; True when the shared count opens it."""
        client = shared.client()
        if client is None:
            return False
        try:
            if self._script is None:
                self._script = client.register_script(_COUNT)
            n = int(self._script(keys=[f"{PREFIX}{route_id}"], args=[max(1, int(cooldown * 1000))], client=client))
        except Exception as e:
            shared.failed(e)
            return False
        shared.recovered()
        return n >= threshold

    def opened(self, route_id: int, cooldown: float) -> None:
        client = shared.client()
        if client is not None:
            try:
                client.hset(OPEN, str(route_id), int((time.time() + cooldown) * 1000))
            except Exception as e:
                shared.failed(e)
                return
        shared_bus.publish("breakers", orjson.dumps([route_id, "open"]))

    def recovered(self, route_id: int) -> None:
        client = shared.client()
        if client is not None:
            try:
                client.pipeline(transaction=False).delete(f"{PREFIX}{route_id}").hdel(OPEN, str(route_id)).execute()
            except Exception as e:
                shared.failed(e)
                return
        shared_bus.publish("breakers", orjson.dumps([route_id, "closed"]))

    def catch_up(self) -> None:
        """Open here the breakers other workers opened whose cooldown has not ended (the listener's
        connect hook). The cooldown restarts here: a route is skipped a little longer, never less."""
        client = shared.client()
        if client is None:
            return
        try:
            noted = client.hgetall(OPEN)
        except Exception as e:
            shared.failed(e)
            return
        now_ms = time.time() * 1000
        for route_id, until in noted.items():
            if int(until) > now_ms:
                self.board.open_here(int(route_id))

    def message(self, payload: bytes) -> None:
        route_id, state = orjson.loads(payload)
        if state == "open":
            self.board.open_here(int(route_id))
        else:
            self.board.close_here(int(route_id))


def install(board) -> None:
    """Share `board`'s breakers through Redis (GATEWAY_REDIS_URL), or keep them local (None)."""
    if not shared.enabled():
        board.share = None
        return
    if not isinstance(board.share, SharedBreakers):
        board.share = SharedBreakers(board)
    shared_bus.subscribe("breakers", board.share.message)
    shared_bus.on_connect(board.share.catch_up)

"""Breakers shared by every worker when scaled out: one route's failures count wherever they happen.

HealthBoard (routing/health.py) calls this only on a failure or a recovery. A failure increments
`gw:brk:<route>` in Redis, a counter that lives for the breaker's cooldown from its first failure
(a short window: failures spread over a longer time never add up); when it reaches the breaker's
threshold the breaker opens here, and an opened breaker is announced to the other workers
(stores/shared_bus.py), which open theirs from the moment they hear it. A recovery (a success after
failures, or a probe that closed the breaker) resets the counter and closes the others' breakers.

Failure mode: advisory. Without Redis each worker's breakers are its own, as in one process.
"""

from __future__ import annotations

import orjson

from gateway.stores import shared, shared_bus

PREFIX = "gw:brk:"
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
        shared_bus.publish("breakers", orjson.dumps([route_id, "open"]))

    def recovered(self, route_id: int) -> None:
        client = shared.client()
        if client is not None:
            try:
                client.delete(f"{PREFIX}{route_id}")
            except Exception as e:
                shared.failed(e)
                return
        shared_bus.publish("breakers", orjson.dumps([route_id, "closed"]))

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
    board.share = SharedBreakers(board)
    shared_bus.subscribe("breakers", board.share.message)

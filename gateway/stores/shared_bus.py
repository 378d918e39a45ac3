"""Messages between workers over Redis pub/sub: one listener greenlet per worker, handlers by channel.

Scaled out (`GATEWAY_REDIS_URL`), what one worker learns that the others must act on at once goes
through here: a change-log nudge (memo reloads now instead of at its next poll), a response
deleted, a semantic-cache entry added, a route's breaker opened. `publish(channel, payload)` is
one PUBLISH on the shared client (stores/shared.py); `subscribe(channel, handler)` registers a
handler called in the listener greenlet with the payload (bytes). Every message carries the
sender's instance id, so a worker never handles its own.

Failure mode: advisory. A publish that cannot reach Redis is dropped (and marks the link down);
the listener reconnects every RETRY_SECONDS while Redis is away and, on every (re)connect, calls
the `on_connect` hooks, so what was missed is caught up (memo polls the change log). A handler
that raises is logged and skipped. Without Redis nothing here runs and nothing is published.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable

from gateway.stores import shared

log = logging.getLogger(__name__)

PREFIX = "gw:bus:"
SEP = b"|"

_instance: tuple[int, bytes] = (0, b"")
_handlers: dict[str, Callable[[bytes], None]] = {}
_own: set[str] = set()  # channels whose handler also runs for this worker's own messages
_on_connect: list[Callable[[], None]] = []
_listener = None
connected = False  # the listener is subscribed now (memo polls rarely while it is)


def instance() -> bytes:
    """This worker's id, in every message it sends (made anew after a fork)."""
    global _instance
    if _instance[0] != os.getpid():
        _instance = (os.getpid(), f"{os.getpid()}-{uuid.uuid4().hex[:8]}".encode())
    return _instance[1]


def subscribe(channel: str, handler: Callable[[bytes], None], own: bool = False) -> None:
    """Call `handler(payload)` for every message on `channel` sent by another worker (and by this
    one too with `own`)."""
    _handlers[channel] = handler
    if own:
        _own.add(channel)


def on_connect(hook: Callable[[], None]) -> None:
    """Run `hook()` whenever the listener (re)subscribes: catch up on what was missed meanwhile."""
    if hook not in _on_connect:
        _on_connect.append(hook)


def publish(channel: str, payload: bytes) -> bool:
    """Send `payload` to every other worker; False when there is no Redis or it could not be reached."""
    client = shared.client()
    if client is None:
        return False
    try:
        client.publish(PREFIX + channel, instance() + SEP + payload)
    except Exception as e:
        shared.failed(e)
        return False
    return True


def start() -> None:
    """Start this worker's listener (once; only with GATEWAY_REDIS_URL)."""
    global _listener
    if not shared.enabled() or (_listener is not None and not _listener.dead):
        return
    import gevent

    _listener = gevent.spawn(_listen)


def stop() -> None:
    global _listener, connected
    if _listener is not None:
        _listener.kill(block=False)
        _listener = None
    connected = False


def _listen() -> None:
    import gevent
    import redis

    global connected
    while True:
        pubsub = None
        try:
            # Its own connection without a read timeout: it waits for messages; the shared client's
            # short timeout is for requests.
            conn = redis.Redis.from_url(shared.url(), socket_connect_timeout=shared.SOCKET_TIMEOUT,
                                        socket_keepalive=True)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(PREFIX + "*")  # every channel, also those of modules imported later
            connected = True
            shared.recovered()
            for hook in list(_on_connect):
                _call(hook)
            while True:
                message = pubsub.get_message(timeout=5.0)
                if message is not None and message.get("type") == "pmessage":
                    _dispatch(message["channel"], message["data"])
        except gevent.GreenletExit:
            connected = False
            raise
        except Exception as e:
            connected = False
            shared.failed(e)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:
                    pass
        gevent.sleep(shared.RETRY_SECONDS)


def _dispatch(channel: bytes | str, data: bytes) -> None:
    name = (channel.decode() if isinstance(channel, bytes) else channel).removeprefix(PREFIX)
    sender, _, payload = data.partition(SEP)
    handler = _handlers.get(name)
    if handler is None or (sender == instance() and name not in _own):
        return
    _call(handler, payload)


def _call(fn: Callable, *args) -> None:
    try:
        fn(*args)
    except Exception:
        log.warning("shared message handler %s failed", getattr(fn, "__name__", fn), exc_info=True)

"""In-flight dedupe: identical concurrent requests share one upstream call.

Advisory: any failure here falls through to a normal call.

The first eligible request (cache_keys.eligible) becomes the leader of a flight keyed by the exact
cache's key, the stream flag, the model name as asked and the stream options (so the leader's
bytes are exactly what a follower would have got). Identical requests arriving while it runs
follow it: a non-stream follower waits for the leader's body; a stream follower waits for the
leader's first chunk, then receives every chunk as the leader's upstream sends it (the leader's
relay is teed at `on_reply`, before the pipeline appends its cost comment, so the leader's
request id and figures never reach a follower). Followers are answered with
`x-gateway-cache: dedupe`, mechanism `inflight_dedupe`, charge 0, and their own ledger row.

When the leader fails (error status, upstream error, its client gone mid-stream):
- followers still waiting (nothing received) proceed on their own, as normal requests;
- followers already streaming got what the leader received, and then an error event in their
  dialect (unless the leader's stream already carried one).
`max_wait_seconds` bounds a follower's wait for the answer or first chunk (then it proceeds on
its own) and any later gap between chunks (then its stream ends in an error event). A flight
whose leader shows no sign of life for that long is replaced by the next request.

Single process: flights are gevent events in this process. Scaled out (GATEWAY_REDIS_URL), the
first worker to claim the key in Redis leads and the others follow its stream through Redis
(inflight_shared.py); within one worker, followers still join the local flight.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from hashlib import sha256

import orjson
from gevent.event import Event

from gateway import wire
from gateway.errors import GatewayError, StreamTruncated, UpstreamTimeout
from gateway.pipeline import savings
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import cache_keys, inflight_shared
from gateway.stores import shared
from gateway.wire.canonical import Usage

name, enforcing = "inflight_dedupe", False

RUNNING, DONE, FAILED = "running", "done", "failed"


class Flight:
    """One leader's answer as it is produced: whole body, or chunks appended as they arrive."""

    __slots__ = ("key", "stream", "state", "body", "chunks", "content_type", "usage", "error",
                 "error_sent", "touched", "followers", "_changed", "remote")

    def __init__(self, key: str, stream: bool) -> None:
        self.key, self.stream = key, stream
        self.state = RUNNING
        self.body: bytes | None = None
        self.chunks: list[bytes] = []
        self.content_type = "application/json"
        self.usage = Usage()
        self.error: GatewayError | None = None
        self.error_sent = False  # the leader's own stream carried the error event
        self.touched = time.monotonic()
        self.followers = 0  # requests that joined this flight (observability, tests)
        self._changed = Event()
        self.remote: inflight_shared.Publisher | None = None  # copies it to other workers (scaled out)

    def publish(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self._wake()

    def finish(self, ok: bool, usage: Usage, error: GatewayError | None = None,
               error_sent: bool = False) -> None:
        if self.state != RUNNING:
            return
        self.state = DONE if ok else FAILED
        self.usage = dataclasses.replace(usage)
        self.error, self.error_sent = error, error_sent
        if FLIGHTS.get(self.key) is self:
            del FLIGHTS[self.key]
        self._wake()

    def wait(self, ready, timeout: float) -> bool:
        """Block this greenlet until `ready()` or the flight ends; False on timeout."""
        deadline = time.monotonic() + timeout
        while not ready() and self.state == RUNNING:
            left = deadline - time.monotonic()
            if left <= 0 or not self._changed.wait(left):
                return bool(ready())
        return True

    def stale(self, max_wait: float) -> bool:
        return self.state == RUNNING and time.monotonic() - self.touched > max_wait

    def _wake(self) -> None:
        # Each change sets the current event and arms a fresh one: waiters re-check, then wait anew.
        self.touched = time.monotonic()
        changed, self._changed = self._changed, Event()
        changed.set()
        if self.remote is not None:
            self.remote.kick()


FLIGHTS: dict[str, Flight] = {}


def flight_key(ctx: RequestContext) -> str:
    options = ctx.body.get("stream_options") if ctx.stream else None
    extra = orjson.dumps([ctx.stream, ctx.requested_model, options], option=orjson.OPT_SORT_KEYS)
    return sha256(cache_keys.request_key(ctx, "exact_cache").encode() + extra).hexdigest()


def before(ctx: RequestContext) -> Reply | None:
    if not savings.enabled(ctx, name) or not cache_keys.eligible(ctx):
        return None
    max_wait = float(savings.settings(ctx, name)["max_wait_seconds"])
    key = flight_key(ctx)
    flight = FLIGHTS.get(key)
    if flight is None or flight.stale(max_wait):
        claimed = inflight_shared.claim(key, max_wait) if shared.enabled() else None
        if claimed is False:  # another worker leads: follow it, or call upstream on our own
            return inflight_shared.follow(ctx, key, max_wait, _mark)
        flight = FLIGHTS[key] = Flight(key, ctx.stream)
        if claimed:
            flight.remote = inflight_shared.Publisher(flight, max_wait)
        ctx.extra[name] = flight
        return None
    return _follow(ctx, flight, max_wait)


def _follow(ctx: RequestContext, flight: Flight, max_wait: float) -> Reply | None:
    """The leader's answer for this follower, or None to proceed on its own."""
    flight.followers += 1
    if not flight.stream:
        if not flight.wait(lambda: False, max_wait) or flight.state != DONE or flight.body is None:
            return None
        _mark(ctx, flight.usage)
        return Reply(body=flight.body, content_type=flight.content_type)
    if not flight.wait(lambda: bool(flight.chunks), max_wait) or not flight.chunks:
        return None  # the leader failed (or is too slow) before its first chunk
    _mark(ctx, Usage())  # the usage arrives with the leader's last chunk
    return Reply(chunks=_replay(ctx, flight, max_wait), content_type=flight.content_type)


def _mark(ctx: RequestContext, usage: Usage) -> None:
    ctx.cache, ctx.cache_mechanism, ctx.charge_micros = "dedupe", name, 0
    ctx.usage = dataclasses.replace(usage)
    ctx.mark_first_byte()


def _replay(ctx: RequestContext, flight: Flight, max_wait: float) -> Iterator[bytes]:
    """The leader's chunks, live: each one as soon as the leader's upstream sent it."""
    sent = 0
    while True:
        if sent < len(flight.chunks):
            sent += 1
            yield flight.chunks[sent - 1]
            continue
        if flight.state == DONE:
            ctx.usage = dataclasses.replace(flight.usage)
            return
        if flight.state == FAILED:
            error = flight.error or StreamTruncated()
            ctx.fail(error)
            if not flight.error_sent:
                yield wire.codec(ctx.endpoint).error_event(error)
            return
        if not flight.wait(lambda n=sent: n < len(flight.chunks), max_wait):
            error = UpstreamTimeout()
            ctx.fail(error)
            yield wire.codec(ctx.endpoint).error_event(error)
            return


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    """The leader's reply, shared: a stream is teed chunk by chunk; a body is kept for after()."""
    flight = ctx.extra.get(name)
    if flight is None or ctx.cache != "miss":
        return reply
    flight.content_type = reply.content_type
    if reply.status != 200:
        return reply
    if reply.chunks is not None and flight.stream:
        reply.chunks = _tee(ctx, flight, reply.chunks)
    elif reply.chunks is None and not flight.stream:
        flight.body = reply.body
    return reply


def _tee(ctx: RequestContext, flight: Flight, chunks: Iterator[bytes]) -> Iterator[bytes]:
    ended = False
    try:
        for chunk in chunks:
            flight.publish(chunk)
            yield chunk
        ended = True
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        # Ended: the leader's relay has its final usage and, on an upstream failure, has already
        # sent the error event. Not ended: its client went away, or the relay broke.
        flight.finish(ended and ctx.error is None, ctx.usage, ctx.error, error_sent=ended)


def after(ctx: RequestContext, reply: Reply | None) -> None:
    """Release the followers, whatever happened to the leader (runs on error too)."""
    flight = ctx.extra.get(name)
    if flight is None or flight.state != RUNNING:
        return
    ok = (reply is not None and reply.status == 200 and ctx.error is None and ctx.cache == "miss"
          and not flight.stream and flight.body is not None)
    flight.finish(ok, ctx.usage, ctx.error)

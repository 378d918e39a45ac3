"""In-flight dedupe across workers (scaled out): one upstream call for identical concurrent
requests, whichever worker each lands on.

The first worker to claim the flight's key (`SET gw:flight:<key> NX PX max_wait`) leads: its
local Flight (inflight.py) gets a `Publisher`, a greenlet that copies what the leader produces
into the Redis stream `gw:flight:s:<key>` (chunks as they come, or the whole body, then an end
entry with the outcome and the usage), so the leader's relay never waits on Redis. A worker that
finds the key taken follows: it reads that stream (XREAD, blocking in short steps) and answers
from it, a stream chunk by chunk as the leader's upstream sends it.

The key is the local flight's key (the exact cache's request key, which carries the scope, so
one org never follows another's flight). The claim lives max_wait seconds and is refreshed by
every batch the leader sends: a leader that dies stops refreshing, and the next request leads.

Failure mode: advisory. No Redis, or an error: the leader just answers its own client; a follower
that has received nothing within max_wait (or whose leader failed first) calls upstream itself;
one already streaming ends with an error event, as a local follower does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator

import gevent
import orjson
from gevent.event import Event

from gateway import wire
from gateway.errors import StreamTruncated, UpstreamTimeout
from gateway.pipeline.context import Reply, RequestContext
from gateway.stores import shared, shared_bus
from gateway.wire.canonical import Usage

log = logging.getLogger(__name__)

PREFIX = "gw:flight:"
STEP_MS = 200  # one blocking read; well under the shared client's socket timeout
KEEP_MS = 60_000  # a finished flight's stream stays readable this long for late followers
RUNNING, DONE = "running", "done"  # a Flight's states (inflight.py)


def claim(key: str, max_wait: float) -> bool | None:
    """True: this worker leads; False: another worker does; None: no Redis now (lead locally)."""
    client = shared.client()
    if client is None:
        return None
    try:
        won = client.set(PREFIX + key, shared_id(), nx=True, px=max(1, int(max_wait * 1000)))
    except Exception as e:
        shared.failed(e)
        return None
    shared.recovered()
    return bool(won)


def shared_id() -> bytes:
    return shared_bus.instance()


class Publisher:
    """Copies a leading Flight into its Redis stream, off the leader's path."""

    def __init__(self, flight, max_wait: float) -> None:
        self.flight = flight
        self.claim_ms = max(1, int(max_wait * 1000))
        self.kicked = Event()
        self.greenlet = gevent.spawn(self._run)

    def kick(self) -> None:
        self.kicked.set()

    def _run(self) -> None:
        flight, key = self.flight, self.flight.key
        stream_key = PREFIX + "s:" + key
        sent = 0
        first = True
        while True:
            self.kicked.wait()
            self.kicked.clear()
            client = shared.client()
            if client is None:
                return
            state = flight.state
            try:
                pipe = client.pipeline(transaction=False)
                for chunk in flight.chunks[sent:]:
                    fields = {"c": chunk}
                    if first:
                        fields["t"], first = flight.content_type, False
                    pipe.xadd(stream_key, fields)
                    sent += 1
                if state != RUNNING:
                    end = {"end": state, "u": orjson.dumps(dataclasses.asdict(flight.usage)),
                           "es": "1" if flight.error_sent else "0", "t": flight.content_type}
                    if state == DONE and not flight.stream and flight.body is not None:
                        end["b"] = flight.body
                    pipe.xadd(stream_key, end)
                    pipe.pexpire(stream_key, KEEP_MS)
                    pipe.delete(PREFIX + key)
                    pipe.execute()
                    return
                pipe.pexpire(stream_key, self.claim_ms + KEEP_MS)
                pipe.pexpire(PREFIX + key, self.claim_ms)
                pipe.execute()
            except Exception as e:
                shared.failed(e)
                return


class _Reader:
    """A follower's view of a remote flight's stream."""

    def __init__(self, key: str) -> None:
        self.stream_key = PREFIX + "s:" + key
        self.last = "0-0"
        self.pending: list[dict] = []

    def next(self, deadline: float) -> dict | None:
        """The next entry, or None when none came before `deadline` (or Redis failed)."""
        while not self.pending:
            left = deadline - time.monotonic()
            client = shared.client()
            if left <= 0 or client is None:
                return None
            try:
                found = client.xread({self.stream_key: self.last}, count=64,
                                     block=max(1, min(STEP_MS, int(left * 1000))))
            except Exception as e:
                # A blocking read that overran the socket timeout on a busy Redis is this follower's
                # problem (it calls upstream itself), not an outage of the link.
                if type(e).__name__ != "TimeoutError":
                    shared.failed(e)
                return None
            for _, entries in found or ():
                for entry_id, fields in entries:
                    self.last = entry_id
                    self.pending.append({(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()})
        return self.pending.pop(0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _usage(entry: dict) -> Usage:
    try:
        return Usage(**orjson.loads(entry["u"]))
    except (KeyError, TypeError, ValueError):
        return Usage()


def follow(ctx: RequestContext, key: str, max_wait: float, mark: Callable[[RequestContext, Usage], None]
           ) -> Reply | None:
    """Another worker's answer for this request, or None to call upstream on its own."""
    reader = _Reader(key)
    entry = reader.next(time.monotonic() + max_wait)
    if not ctx.stream:
        while entry is not None and "end" not in entry:  # a body flight has no chunks; skip anything else
            entry = reader.next(time.monotonic() + max_wait)
        if entry is None or _text(entry["end"]) != "done" or "b" not in entry:
            return None
        mark(ctx, _usage(entry))
        return Reply(body=bytes(entry["b"]), content_type=_text(entry.get("t", "application/json")))
    if entry is None or "c" not in entry:
        return None  # the leader failed (or is too slow) before its first chunk
    mark(ctx, Usage())  # the usage comes with the end entry
    content_type = _text(entry.get("t", "text/event-stream"))
    return Reply(chunks=_replay(ctx, reader, entry, max_wait), content_type=content_type)


def _replay(ctx: RequestContext, reader: _Reader, entry: dict, max_wait: float) -> Iterator[bytes]:
    while True:
        if entry is None:
            error = UpstreamTimeout()
            ctx.fail(error)
            yield wire.codec(ctx.endpoint).error_event(error)
            return
        if "c" in entry:
            yield bytes(entry["c"])
        elif "end" in entry:
            if _text(entry["end"]) == "done":
                ctx.usage = _usage(entry)
                return
            error = StreamTruncated()
            ctx.fail(error)
            if _text(entry.get("es", "0")) != "1":
                yield wire.codec(ctx.endpoint).error_event(error)
            return
        entry = reader.next(time.monotonic() + max_wait)

"""Drain: which requests may be interrupted, and ending them when the server stops.

On SIGTERM the server stops accepting and lets the requests in flight finish. Past the drain
timeout it calls `cut()`: `ShuttingDown` (503) is raised in every greenlet that is waiting on its
upstream, where it waits. The pipeline handles it as any failure: a request gets the 503 in its
client's dialect, a stream ends with the dialect's error event, and each records its one ledger row
with the usage seen so far. A greenlet that is writing to its client is never interrupted there
(its response would be cut mid-write, with no error event): it meets the cut the next time it
would wait on the upstream, as does any request that starts after the cut.

Failure mode: a greenlet that swallows the exception (an advisory stage that skips on failure)
carries on; the server's last step kills whatever is left after a short grace.
"""

from __future__ import annotations

import gevent
from greenlet import getcurrent

from gateway.errors import ShuttingDown

_waiting: set = set()  # greenlets waiting on an upstream (or in the pipeline's stages)
_cut = False


class _Waiting:
    """`with waiting():` the current greenlet waits on its upstream, and may be interrupted by
    `cut()`. A class, not a generator: streams enter it once per chunk."""

    __slots__ = ("glet",)

    def __enter__(self) -> None:
        if _cut:
            raise ShuttingDown()
        self.glet = getcurrent()
        _waiting.add(self.glet)

    def __exit__(self, *exc) -> None:
        _waiting.discard(self.glet)


waiting = _Waiting


class Stream:
    """A relayed stream's mark for its whole life, cheaper than entering `waiting()` per chunk:
    set `waiting` around each wait on the upstream, and stop when `stopped` is set; `cut()`
    interrupts the stream only while it waits, else sets `stopped`. `close()` when it ends."""

    __slots__ = ("glet", "waiting", "stopped")

    def __init__(self) -> None:
        self.glet = getcurrent()
        self.waiting = False
        self.stopped = _cut
        _streams.add(self)

    def close(self) -> None:
        _streams.discard(self)


_streams: set[Stream] = set()


def in_flight() -> int:
    """Requests in flight now: waiting on their upstream, or relaying a stream (what work of lower
    priority yields to)."""
    return len(_waiting) + len(_streams)


def cut() -> int:
    """End the requests still running: raise ShuttingDown where each waits. Returns how many."""
    global _cut
    _cut = True
    interrupted = 0
    for glet in list(_waiting):
        _waiting.discard(glet)  # once: a second throw could land in its error handling
        gevent.kill(glet, ShuttingDown())
        interrupted += 1
    for stream in list(_streams):
        stream.stopped = True  # a stream writing to its client meets the cut at its next wait
        if stream.waiting:
            _streams.discard(stream)
            stream.waiting = False
            gevent.kill(stream.glet, ShuttingDown())
            interrupted += 1
    return interrupted


def reset() -> None:
    """Accept requests again (a server started anew in the same process)."""
    global _cut
    _cut = False
    _waiting.clear()
    _streams.clear()

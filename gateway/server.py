"""The gevent WSGI server: TCP_NODELAY on accepted sockets, and a graceful stop that drains.

On SIGTERM or SIGINT `serve` closes the listener at once, closes idle keep-alive connections, and
lets the requests in flight finish for up to `drain_seconds` (GATEWAY_DRAIN_SECONDS). Past that (or
at a second signal), pipeline/drain.py ends the ones still running: a 503, or a stream's error
event in its client's dialect, each with its ledger row. Then the ledger writer flushes and the
process exits.
Failure mode: a handler that does not end within CUT_GRACE_SECONDS of the cut is killed (a
stream stuck writing to a client that no longer reads still records its row, as a disconnect).
"""

from __future__ import annotations

import logging
import signal
import socket

import gevent
import gevent.event
from flask import Flask
from gevent import pywsgi
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer
from greenlet import getcurrent

from gateway.pipeline import drain

log = logging.getLogger(__name__)

_NO_LOG = getattr(pywsgi, "_NoopLog", ())  # the log pywsgi uses for log=None
CUT_GRACE_SECONDS = 5.0  # for the interrupted requests to record their rows and send their error events


class NoDelayHandler(WSGIHandler):
    """pywsgi writes headers and body in separate sends: without TCP_NODELAY, Nagle plus delayed
    ACK stall every keep-alive response by about 40 ms. Tracks which connections are inside a
    request (as opposed to idle between keep-alive requests), so that a stop waits only for those."""

    def __init__(self, sock, address, server, rfile=None):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)

    def log_request(self):
        # pywsgi formats the access-log line even when it writes it nowhere
        if not isinstance(self.server.log, _NO_LOG):
            super().log_request()

    def handle_one_response(self):
        busy = getattr(self.server, "busy", None)
        if busy is None:
            return super().handle_one_response()
        current = getcurrent()
        busy.add(current)
        try:
            return super().handle_one_response()
        finally:
            busy.discard(current)
            if self.server.stopping:
                self.close_connection = True  # no keep-alive once stopping
            if not busy:
                self.server.idle.set()


class DrainingServer(WSGIServer):
    """A WSGIServer whose handlers run in a pool, so that a stop can wait for them."""

    def __init__(self, *args, **kw):
        super().__init__(*args, spawn=Pool(), **kw)
        self.busy: set = set()  # greenlets inside a request
        self.idle = gevent.event.Event()
        self.stopping = False
        self.hurried = False

    def drain(self, seconds: float) -> None:
        """Stop accepting, wait up to `seconds` for the requests in flight, end the rest."""
        self.stopping = True
        self.close()
        self._close_idle()
        if self.busy and not self.hurried:
            self.idle.clear()
            log.warning("draining %d requests (up to %ss)", len(self.busy), seconds)
            self.idle.wait(timeout=seconds)
        if self.busy:
            log.warning("drain timeout: ending %d requests", drain.cut())
            self.idle.clear()
            self.idle.wait(timeout=CUT_GRACE_SECONDS)
        else:
            drain.cut()  # a keep-alive request that slipped in after the wait is refused
        self._close_idle()
        if not self.pool.join(timeout=CUT_GRACE_SECONDS if self.busy else 1):
            self.pool.kill(block=True, timeout=1)

    def hurry(self) -> None:
        """Stop waiting for the requests in flight: end them now."""
        self.hurried = True
        self.idle.set()

    def _close_idle(self) -> None:
        """Connections waiting for their next keep-alive request hold no work: close them."""
        idle = [g for g in self.pool if g not in self.busy]
        if idle:
            gevent.killall(idle, block=False)


def make_server(app: Flask, host: str, port: int, access_log: bool = False) -> WSGIServer:
    return WSGIServer((host, port), app, handler_class=NoDelayHandler, log="default" if access_log else None,
                      backlog=1024)


def serve(app: Flask, host: str, port: int, access_log: bool = False) -> None:
    from gateway.boot import start_background, stop_background

    settings = app.extensions["settings"]
    drain.reset()
    server = DrainingServer((host, port), app, handler_class=NoDelayHandler,
                            log="default" if access_log else None, backlog=1024)
    start_background(app)
    stopping = gevent.event.Event()

    def shutdown(signum: int) -> None:
        if not stopping.is_set():
            log.warning("signal %s: stop accepting; drain requests (up to %ss)", signum, settings.drain_seconds)
            stopping.set()
        else:  # a second signal: end what is still running now
            log.warning("signal %s again: ending the requests still running", signum)
            server.hurry()

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, shutdown, sig)
    server.start()
    stopping.wait()
    server.drain(settings.drain_seconds)
    stop_background(app)
    log.warning("stopped; ledger flushed")

"""The gevent WSGI server: TCP_NODELAY on accepted sockets, graceful stop that flushes the ledger."""

from __future__ import annotations

import logging
import signal
import socket

import gevent
import gevent.event
from flask import Flask
from gevent.pywsgi import WSGIHandler, WSGIServer

log = logging.getLogger(__name__)


class NoDelayHandler(WSGIHandler):
    """pywsgi writes headers and body in separate sends: without TCP_NODELAY, Nagle plus delayed
    ACK stall every keep-alive response by about 40 ms."""

    def __init__(self, sock, address, server, rfile=None):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)


def make_server(app: Flask, host: str, port: int, access_log: bool = False) -> WSGIServer:
    return WSGIServer((host, port), app, handler_class=NoDelayHandler, log="default" if access_log else None,
                      backlog=1024)


def serve(app: Flask, host: str, port: int, access_log: bool = False) -> None:
    from gateway.boot import start_background, stop_background

    settings = app.extensions["settings"]
    server = make_server(app, host, port, access_log)
    start_background(app)
    stopping = gevent.event.Event()

    def shutdown(signum: int) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.warning("signal %s: draining requests (up to %ss), then flushing the ledger",
                    signum, settings.shutdown_grace_seconds)
        # In-flight requests finish (streams that outlive the grace are closed, and still metered).
        server.stop(timeout=settings.shutdown_grace_seconds)

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, shutdown, sig)
    server.serve_forever()
    stop_background(app)
    log.warning("stopped; ledger flushed")


"""A gunicorn worker that ends its requests before the master's hard kill:
`gunicorn -k gateway.gunicorn_worker.Worker -w N app:app`.

gunicorn's own gevent worker, on SIGTERM, stops accepting and waits `--graceful-timeout` for its
connections, while the master kills it outright (SIGKILL) at that same timeout: a stream that
outlives it loses its ledger row and its client sees the connection cut. This worker ends them
first, a little before the master's kill (pipeline/drain.py, as `gateway serve` does past its
drain): each gets its dialect's 503 or stream error event and its row, then the worker exits and
flushes its ledger writer (app.py). `--graceful-timeout` is the drain; the last
CUT_GRACE_SECONDS of it (at most half) are left for ending the rest and the flush.
"""

from __future__ import annotations

import gevent
from gunicorn.workers.ggevent import GeventWorker

from gateway.pipeline import drain
from gateway.server import CUT_GRACE_SECONDS


class Worker(GeventWorker):
    _cutter: gevent.Greenlet | None = None

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if self._cutter is None:
            timeout = float(self.cfg.graceful_timeout)
            self._cutter = gevent.spawn_later(timeout - min(CUT_GRACE_SECONDS, timeout / 2), drain.cut)

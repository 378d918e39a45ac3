"""WSGI entry for gunicorn (`gunicorn -k gevent app:app`) and fly: gevent monkey-patch first.

Run `gateway init` once before the first start (it migrates and prints the first run's credentials).
Each worker loads this module after the fork, so each has its own ledger writer (and tokenizer,
loaded by start_background); a worker stopped gracefully (SIGTERM to gunicorn) flushes it on exit.
Gunicorn's --graceful-timeout is the drain here: a request the worker kills past it still records
its row (a 503), but the master kills workers outright at that same timeout, so a stream that
outlives it can lose its row (`gateway serve` has no such gap: README, "Shutdown and crashes").
"""

from gevent import monkey

monkey.patch_all()

import atexit  # noqa: E402

from gateway import create_app  # noqa: E402
from gateway.boot import start_background, stop_background  # noqa: E402

app = create_app()
start_background(app)
atexit.register(stop_background, app)

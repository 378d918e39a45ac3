"""WSGI entry for gunicorn (`gunicorn -k gateway.gunicorn_worker.Worker app:app`) and fly: gevent monkey-patch first.

Run `gateway init` once before the first start (it migrates and prints the first run's credentials).
Each worker loads this module after the fork, so each has its own ledger writer (and tokenizer,
loaded by start_background); a worker stopped gracefully (SIGTERM to gunicorn) flushes it on exit.
Gunicorn's --graceful-timeout is the drain here; gateway's worker class ends the requests still
running shortly before the master's hard kill at that timeout (gateway/gunicorn_worker.py), which
gunicorn's plain `-k gevent` worker does not.
"""

from gevent import monkey

monkey.patch_all()

import atexit  # noqa: E402

from gateway import create_app  # noqa: E402
from gateway.boot import start_background, stop_background  # noqa: E402

app = create_app()
start_background(app)
atexit.register(stop_background, app)

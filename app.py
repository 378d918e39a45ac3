"""WSGI entry for gunicorn (`gunicorn -k gevent app:app`) and fly: gevent monkey-patch first."""

from gevent import monkey

monkey.patch_all()

from gateway import create_app  # noqa: E402
from gateway.boot import start_background  # noqa: E402

app = create_app()
start_background(app)

"""Gateway: a self-hosted LLM inference gateway.

create_app() wires settings, database, in-memory maps, the ledger writer, jobs and blueprints.
Imports happen inside it, so that `gevent.monkey.patch_all()` (app.py, `gateway serve`) always
runs before ssl, requests or SQLAlchemy are imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["create_app"]


def create_app(overrides: Mapping[str, Any] | None = None, *, routes: bool = True):
    """The app on `overrides` (else GATEWAY_*). `routes=False`, for the CLI's one-shot commands: the
    same settings, database and process-wide configuration without the API, console and public
    routes, whose imports and registration are about a third of such a command's start."""
    from flask import Flask

    from gateway import db, jobs, tracing
    from gateway.ledger.writer import WRITER
    from gateway.memo import MEMO
    from gateway.providers import http, openrouter
    from gateway.scrub import install_log_filter
    from gateway.services import budgets, topups
    from gateway.settings import ROOT, Settings

    settings = Settings.load(overrides)
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"),
                instance_path=str(settings.instance))
    app.extensions["settings"] = settings
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JSON_SORT_KEYS=False,
    )
    install_log_filter()
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Inside the inference fast path (api.init_app wraps outside): only Flask's routes (the
        # console's https detection, its client address) read the forwarded headers.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    db.init_app(app)
    MEMO.configure(settings.secret_key)
    http.configure(settings)
    openrouter.configure(settings)
    budgets.configure(settings)
    topups.configure(settings)
    WRITER.init_app(app)
    if routes:
        from gateway import admin, api
        from gateway.web import dashboard, public

        api.init_app(app)
        admin.init_app(app)
        public.init_app(app)
        dashboard.init_app(app)
    jobs.init_app(app)
    tracing.init_app(app)
    return app

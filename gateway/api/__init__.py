"""/v1 blueprint: JSON only, bearer or x-api-key auth, no session, no CSRF.

The inference routes (POST chat, messages, responses, embeddings and the /api/v1/llm aliases) are
served by gateway.api.inference in front of Flask; this blueprint (blueprint.py) has the rest of /v1."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from gateway.api.blueprint import atlas, bp, http_error


def init_app(app: Flask) -> None:
    from gateway.api import (  # noqa: F401  (routes register on import)
        account,
        batches,
        byok,
        deferred,
        error_reports,
        health,
        keys,
        message_batches,
        models,
        providers,
        requests,
        responses,
        usage,
    )
    from gateway.api.inference import InferenceRoutes

    app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(atlas, url_prefix="/api/v1")
    app.register_blueprint(health.bp)
    app.register_error_handler(HTTPException, http_error)
    app.wsgi_app = InferenceRoutes(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])

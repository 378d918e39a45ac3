"""Public pages, no sign-in: the landing page (/), the API guide (/docs), and the catalog (/models,
/models/<slug>) from the in-memory catalog. None of them queries the database: / and /docs render
from the request's own base URL and the catalog's size in memory."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template, request, send_from_directory

from gateway.memo import MEMO
from gateway.web.catalog import card, cards

bp = Blueprint("public", __name__)


def _base_url() -> str:
    """This gateway's /v1 as the client reached it (through GATEWAY_TRUSTED_PROXIES' headers if set)."""
    return request.url_root.rstrip("/") + "/v1"


def _example_model() -> str:
    """A model this gateway serves, for the examples (the first slug with a route)."""
    served = sorted(slug for slug, m in MEMO.catalog.models.items() if m.routes)
    preferred = [s for s in served if s.startswith("openai/")] or served
    return preferred[0] if preferred else "openai/gpt-4.1-mini"


@bp.get("/")
def index():
    return render_template("public/index.html", base_url=_base_url(), model=_example_model(),
                           models=sum(1 for m in MEMO.catalog.models.values() if m.routes))


@bp.get("/docs")
def docs():
    return render_template("public/docs.html", base_url=_base_url(), model=_example_model())


@bp.get("/models")
def models():
    return render_template("public/models.html", models=cards())


@bp.get("/models/<path:slug>")
def model(slug: str):
    found = MEMO.catalog.models.get(slug)
    if found is None or not found.routes:
        return render_template("public/not_found.html", slug=slug), 404
    return render_template("public/model.html", m=card(found))


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for it on every page; the vendored icon (static/favicon.ico), cached for a day."""
    return send_from_directory(current_app.static_folder, "favicon.ico", mimetype="image/x-icon", max_age=86400)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

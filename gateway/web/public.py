"""Public catalog pages: /models and /models/<slug> in plain HTML, no sign-in, from the in-memory catalog."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template, send_from_directory

from gateway.memo import MEMO
from gateway.web.catalog import card, cards

bp = Blueprint("public", __name__)


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

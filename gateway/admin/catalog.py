"""Available Models console page: the catalog in force, with routes, prices, capabilities and reference."""

from __future__ import annotations

from flask import request

from gateway.admin import bp
from gateway.htmx import render_page_or_partial
from gateway.public import cards


@bp.get("/models")
def models():
    query = (request.args.get("q") or "").strip().lower()
    found = [m for m in cards() if query in m["slug"].lower()
             or any(query in p.lower() for p in m["providers"])] if query else cards()
    return render_page_or_partial("admin/models/index.html", "admin/models/_table.html", models=found,
                                  q=query)

"""HTMX helpers: one view serves the full page or just its partial; the headers every signed-in
page carries."""

from __future__ import annotations

from flask import Response, make_response, render_template, request


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def is_history_restore() -> bool:
    return request.headers.get("HX-History-Restore-Request") == "true"


def render_page_or_partial(page: str, partial: str, **context) -> Response:
    use_partial = is_htmx() and not is_history_restore()
    resp = make_response(render_template(partial if use_partial else page, **context))
    resp.vary.add("HX-Request")
    return resp


def trigger(resp: Response, event: str) -> Response:
    resp.headers["HX-Trigger"] = event
    return resp


def private_headers(resp: Response) -> Response:
    """A signed-in page (console, dashboard): never cached, never framed, never type-sniffed."""
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp

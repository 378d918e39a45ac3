"""Gateway settings -> Ollama (super-admins only): the instance's base URL, a Test that reads its
model list now, and Save, which adds the `ollama` provider with its models as `ollama/<name>` at
zero cost (services/ollama.py). A local Ollama found at start is offered here, never added unasked."""

from __future__ import annotations

from flask import current_app, request

from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_superadmin, write
from gateway.admin.providers import refresh_catalog
from gateway.db import request_session
from gateway.ledger.pricing import usd
from gateway.services import ollama as ollama_service
from gateway.services.errors import AdminError
from gateway.services.providers import shown_url

PAGE, FORM, RESULT = "admin/ollama/index.html", "admin/ollama/_form.html", "admin/ollama/_result.html"


def _page(partial: str, base_url: str | None = None, **kw):
    session = request_session()
    p = ollama_service.provider(session)
    detected = ollama_service.offer()
    url = base_url if base_url is not None else (
        shown_url(p.base_url) if p else detected.url if detected else current_app.extensions["settings"].ollama_probe_url
        or "http://127.0.0.1:11434")
    return reply(PAGE, partial, provider=p, base_url=url, models=ollama_service.models(session),
                 detected=detected, usd=usd, **kw)


@bp.get("/ollama")
def ollama():
    require_superadmin()
    return _page(FORM)


@bp.post("/ollama/test")
def ollama_test():
    """Read the model list now (htmx swaps in the result; nothing is saved)."""
    require_superadmin()
    url = request.form.get("base_url", "")
    try:
        tags = ollama_service.test(url)
    except AdminError as e:
        return reply(PAGE, RESULT, base_url=url[:600], test_error=str(e), provider=None, models=[], detected=None,
                     usd=usd)
    return reply(PAGE, RESULT, base_url=url, tags=tags, provider=None, models=[], detected=None, usd=usd)


@bp.post("/ollama")
def ollama_save():
    """Read the model list again (what is saved is what the instance has now) and save it."""
    require_superadmin()
    url = request.form.get("base_url", "")
    try:
        tags = ollama_service.test(url)
        change = write(ollama_service.save, url, tags)
    except AdminError as e:
        return _page(FORM, base_url=url[:600], error=str(e))
    refresh_catalog()
    ollama_service.forget_offer()
    parts = [f"Saved Ollama at {shown_url(url.strip())}: {len(tags)} model{'s' if len(tags) != 1 else ''} at $0"]
    if change["added"]:
        parts.append(f"added {', '.join(change['added'])}")
    if change["removed"]:
        parts.append(f"removed (no longer pulled) {', '.join(change['removed'])}")
    return _page(FORM, notice="; ".join(parts) + ". Clients ask for them as the model ollama/<name>.",
                 event="providers-changed")

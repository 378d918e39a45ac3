"""Home's "Try a request": one chat request through the gateway's own pipeline, answered on the page.

A newcomer goes from an empty install to a working request without reading anything: the box sends
the message as an ordinary API call of the chosen org (auth, gate, routing, savings, the ledger row),
with a key the admin pastes or, left blank, a new inference key made for the org (audited as any
key, its secret shown once with a curl line using this server's real base URL, and kept in the
form for the next try). Failure mode: the pipeline's error (no credits, an upstream refusing its
key) is shown as its message, with the request's id to look up in Gateway logs.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import abort, request
from flask_login import current_user

from gateway import db
from gateway.admin.blueprint import bp
from gateway.admin.editing import require_admin, visible_orgs
from gateway.admin.home import dollars, try_models
from gateway.db import request_session
from gateway.errors import GatewayError
from gateway.htmx import render_page_or_partial
from gateway.memo import MEMO
from gateway.models import Org
from gateway.pipeline import run
from gateway.pipeline.context import RequestContext
from gateway.services import tenancy
from gateway.services.errors import AdminError

MESSAGE_MAX = 4000
TRY_MAX_TOKENS = 256


def _org(raw: str | None) -> Org:
    orgs = visible_orgs(request_session())
    if not orgs:
        abort(403, description="Your account belongs to no org.")
    if raw and raw.isdigit():
        for org in orgs:
            if org.id == int(raw):
                return org
        abort(403, description="You can only send requests for your own org.")
    return orgs[0]


def _new_key(org: Org) -> str:
    with db.write_lock, db.session_scope() as session:
        secret = tenancy.create_key(session, session.get(Org, org.id), name="console try", scope="inference",
                                    actor=current_user.email).secret
    with db.session_scope() as session:  # this process knows the key now; the others from the change log
        MEMO.reload(session, "keys")
    return secret


def answer_of(body: bytes | None) -> str:
    choice = (orjson.loads(body or b"{}").get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


@bp.post("/home/try")
def home_try():
    require_admin()
    form = request.form.to_dict()
    org = _org(form.get("org"))
    model = (form.get("model") or "").strip()
    message = (form.get("message") or "").strip()[:MESSAGE_MAX]
    key = (form.get("key") or "").strip()
    out: dict[str, Any] = {"try_form": {**form, "org": org.id}, "models": try_models(), "dollars": dollars,
                           "base_url": request.host_url.rstrip("/") + "/v1", "orgs": visible_orgs(request_session())}
    if not model or not message:
        return render_page_or_partial("admin/home/_try.html", "admin/home/_try.html",
                                      try_error="Pick a model and write a message.", **out)
    new_key = None
    if not key:
        try:
            key = new_key = _new_key(org)
        except AdminError as e:
            return render_page_or_partial("admin/home/_try.html", "admin/home/_try.html",
                                          try_error=f"No key could be made for {org.name}: {e}", **out)
    body = {"model": model, "messages": [{"role": "user", "content": message}], "max_tokens": TRY_MAX_TOKENS}
    ctx = RequestContext(endpoint="chat.completions", dialect="openai", raw=orjson.dumps(body),
                         headers={"Content-Type": "application/json"}, raw_key=key)
    result: dict[str, Any] = {"request_id": ctx.request_id, "model": model, "body": body}
    try:
        reply = run(ctx)
        result.update(answer=answer_of(reply.body), charge=ctx.charge_micros, saved=ctx.saved_micros,
                      served_by=f"{ctx.route.provider.name}/{ctx.route.upstream_model}" if ctx.route else ctx.cache)
    except GatewayError as e:
        result.update(error=e.message, status=e.status)
    except (ValueError, TypeError):
        result.update(error="The provider's answer could not be read.", status=502)
    out["try_form"]["key"] = key
    return render_page_or_partial("admin/home/_try.html", "admin/home/_try.html", result=result, new_key=new_key,
                                  **out)

"""Gateway settings -> Features (super-admins only): which savings layers orgs may switch on or off
themselves from their dashboard, and what each org chose (services/features.py holds the rules)."""

from __future__ import annotations

from flask import request

from gateway import db
from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_superadmin, write
from gateway.admin.savings import ABOUT, LABELS
from gateway.db import request_session
from gateway.memo import MEMO
from gateway.pipeline.savings import LAYERS, self_service
from gateway.services import features as feature_service
from gateway.services.errors import AdminError

PAGE, FORM = "admin/features/index.html", "admin/features/_form.html"


def _page(**kw):
    return reply(PAGE, FORM, layers=LAYERS, labels=LABELS, about=ABOUT, opened=self_service(MEMO.policy),
                 opt_ins=feature_service.opt_in_rows(request_session()), **kw)


@bp.get("/features")
def features():
    require_superadmin()
    return _page()


@bp.post("/features")
def features_save():
    require_superadmin()
    chosen = request.form.getlist("allowed")
    if len(chosen) > len(LAYERS) * 2:
        return _page(error="Too many values.")
    try:
        saved = write(feature_service.put_allowed, chosen)
    except AdminError as e:
        return _page(error=str(e))
    with db.session_scope() as session:  # this process shows (and serves) the new list at once
        MEMO.reload(session, "policy")
    names = ", ".join(LABELS.get(n, n) for n in saved) or "none"
    return _page(notice=f"Saved. Orgs may switch these themselves: {names}.", event="features-changed")

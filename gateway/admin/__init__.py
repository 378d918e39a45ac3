"""HTMX console blueprint: HTML behind flask-login with CSRF, one module per area."""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, request, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect

from gateway import db
from gateway.models import User

bp = Blueprint("admin", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})


@login_manager.user_loader
def _load_user(user_id: str):
    user = db.request_session().get(User, int(user_id))
    return LoginUser(user) if user and user.status == "active" else None  # disabling ends a session


class LoginUser:
    """flask-login's view of a console user."""

    is_active = True
    is_anonymous = False
    is_authenticated = True

    def __init__(self, user: User) -> None:
        self.user = user
        self.id = user.id
        self.email = user.email
        self.is_superadmin = user.is_superadmin
        self.org_id = user.org_id

    def get_id(self) -> str:
        return str(self.id)


@bp.before_request
def _require_login():
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("admin.login", next=request.full_path if request.query_string else request.path))
    return None


@bp.after_request
def _headers(resp):
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


@bp.after_request
def _remember_cookie(resp):
    return login_manager._update_remember_cookie(resp)


@bp.get("/")
def home():
    return redirect(url_for("admin.logs"))


def init_app(app: Flask) -> None:
    from gateway.admin import (  # noqa: F401  (views register on import)  # noqa: F401  (routing console)
        access,
        agents,
        audit,
        auth,
        catalog,
        logs,
        providers,  # noqa: F401  (providers page)
        routing,
        savings,  # noqa: F401  (savings report and settings)
        tenancy,  # noqa: F401  (orgs, credits and API keys)
    )

    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in the admin blueprint only
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)
    login_manager.login_view = "admin.login"
    login_manager.init_app(app)
    # flask-login hooks its remember-cookie refresh onto every response; keep it off /v1.
    hook = login_manager._update_remember_cookie
    app.after_request_funcs[None] = [f for f in app.after_request_funcs.get(None, []) if f != hook]
    app.register_blueprint(bp, url_prefix="/admin")

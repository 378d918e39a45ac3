"""The console's blueprint and its guards: flask-login users, CSRF on every POST, no-store and
anti-framing headers. The view modules (one per area) register their routes on `bp`; they import it
from here, never from the package, so the package can import them without a cycle."""

from __future__ import annotations

from flask import Blueprint, redirect, request, url_for
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
    return LoginUser(user) if user else None


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

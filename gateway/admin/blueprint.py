"""The console's blueprint and its guards: flask-login users, CSRF on every POST, no-store and
anti-framing headers. The view modules (one per area) register their routes on `bp`; they import it
from here, never from the package, so the package can import them without a cycle.

A session names the user and the user's session version (`"<id>:<version>"`); the version is
bumped on sign-out and on a password change, so a cookie copied before either opens nothing after.
A user holding a one-time password reaches only the password page until it is changed.
A member (the least role) reaches only the password page and sign-out here: any other console page
redirects to their own dashboard (/dashboard) and any other write is a 403. The services re-check
every write's scope (services/errors.py), so a view that forgot a check still cannot write.
The session cookie is HttpOnly, SameSite=Lax, and Secure whenever the request came over https
(directly, or through a proxy trusted by GATEWAY_TRUSTED_PROXIES).
"""

from __future__ import annotations

from flask import Blueprint, Flask, abort, make_response, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect

from gateway import db
from gateway.htmx import private_headers
from gateway.models import User

bp = Blueprint("admin", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
# Reachable while the password is one-time: changing it, and leaving.
PASSWORD_ENDPOINTS = frozenset({"admin.password", "admin.logout"})
# A member's whole console: the rest of their world is the dashboard.
MEMBER_ENDPOINTS = PUBLIC_ENDPOINTS | PASSWORD_ENDPOINTS


@login_manager.user_loader
def _load_user(session_id: str):
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None  # a cookie from before session versions: sign in again
    user = db.request_session().get(User, int(user_id))
    if user is None or user.session_version != int(version) or user.status != "active":
        return None  # a password change, reset or disabling ends every session
    return LoginUser(user)


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
        self.role = "super-admin" if user.is_superadmin else (user.role or "member")
        self.org_id = user.org_id
        self.must_change_password = user.must_change_password
        self.session_version = user.session_version

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


class RequestSecureSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure when this request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return app.config["SESSION_COOKIE_SECURE"] or request.is_secure


@bp.before_request
def _require_login():
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("admin.login", next=request.full_path if request.query_string else request.path))
    if current_user.must_change_password and request.endpoint not in PASSWORD_ENDPOINTS:
        return redirect(url_for("admin.password"))
    if current_user.role == "member" and request.endpoint not in MEMBER_ENDPOINTS:
        if request.method not in ("GET", "HEAD"):
            abort(403, description="Members manage their own keys and requests on their dashboard.")
        target = url_for("dashboard.home")
        if request.headers.get("HX-Request") == "true":  # htmx follows a redirect into a swap; send the page
            resp = make_response("", 204)
            resp.headers["HX-Redirect"] = target
            return resp
        return redirect(target)
    return None


bp.after_request(private_headers)


@bp.after_request
def _remember_cookie(resp):
    return login_manager._update_remember_cookie(resp)


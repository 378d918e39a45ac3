"""Console sign-in: hashed passwords, CSRF, and a lockout after repeated failures.

Every attempt costs one password hash, whether the email is known, unknown or locked, so the
answer's timing does not tell which emails have accounts. Signing out ends every session of the
user (the session version is bumped), not only this browser's cookie.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from gateway import crypto, db
from gateway.admin.blueprint import LoginUser, bp
from gateway.models import User, utcnow
from gateway.services.tenancy import audit, end_sessions


def _safe_next(target: str | None, member: bool = False) -> str:
    """Back to the page that asked for sign-in (a console or dashboard path only); by default the
    console, or a member's own dashboard."""
    if target and target.startswith(("/admin", "/dashboard")) and not target.startswith("//"):
        return target
    return url_for("dashboard.home" if member else "admin.home")


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        settings = current_app.extensions["settings"]
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        with db.write_lock, db.session_scope() as session:
            user = session.scalar(select(User).where(User.email == email))
            now = utcnow()
            stored = user.password_hash if user is not None else crypto.DUMMY_PASSWORD_HASH
            matches = crypto.check_password(stored, password)  # the same work for every email
            if user is not None and user.locked_until and user.locked_until > now:
                error = "Too many failed sign-ins. This account is locked for a while; try again later."
            elif user is None or not matches:
                error = "Wrong email or password."
                if user is not None:
                    user.failed_logins += 1
                    if user.failed_logins >= settings.login_max_failures:
                        user.locked_until = now + timedelta(seconds=settings.login_lockout_seconds)
                        user.failed_logins = 0
                        audit(session, email, "login.lockout")
            elif user.status != "active":
                error = "This account is disabled. Ask an administrator of your organization."
            else:
                user.failed_logins = 0
                user.locked_until = None
                user.last_login_at = now
                login_user(LoginUser(user))
                if user.must_change_password:
                    return redirect(url_for("admin.password"))
                member = not user.is_superadmin and user.role == "member"
                return redirect(_safe_next(request.args.get("next"), member))
        return render_template("admin/login.html", error=error, email=email), 401
    return render_template("admin/login.html", error=error, email="")


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        with db.write_lock, db.session_scope() as session:
            user = session.get(User, current_user.id)
            if user is not None:
                end_sessions(user)
    logout_user()
    return redirect(url_for("admin.login"))
